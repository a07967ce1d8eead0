-- bondhu: pg_cron jobs and health.
--
-- Two jobs, kept by name in pg_cron's cron.job when pg_cron is installed in this
-- database: bondhu_personality_update and bondhu_insights_cleanup. pg_cron 1.4
-- evaluates schedules in GMT.

CREATE FUNCTION bondhu.cron_installed() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')
$$;

-- id in health output, pg_cron job name, default schedule, command.
CREATE FUNCTION bondhu.jobs() RETURNS TABLE (id text, jobname text, default_schedule text, command text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('personality_update', 'bondhu_personality_update', '0 2 * * *',
            'CALL public.bondhu_run_update_all()'),
           ('insights_cleanup', 'bondhu_insights_cleanup', '0 3 * * 0',
            'CALL public.bondhu_run_cleanup()')
$$;

-- The next time a cron schedule fires after a moment, in GMT as pg_cron 1.4 runs it.
CREATE FUNCTION bondhu.cron_next_run(schedule text, after timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(bondhu.cron_next_run_epoch(schedule, extract(epoch FROM after)::double precision))
$$;

CREATE FUNCTION bondhu.scheduled_jobs() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT bondhu.cron_installed() THEN
        RETURN '[]'::jsonb;
    END IF;
    RETURN coalesce((
        SELECT jsonb_agg(jsonb_build_object('id', b.id, 'jobname', j.jobname, 'schedule', j.schedule,
                                            'command', j.command, 'active', j.active) ORDER BY b.id DESC)
        FROM bondhu.jobs() b JOIN cron.job j ON j.jobname = b.jobname), '[]'::jsonb);
END $$;

CREATE FUNCTION public.bondhu_schedule(update_schedule text DEFAULT '0 2 * * *',
                                       cleanup_schedule text DEFAULT '0 3 * * 0') RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM bondhu.cron_check('update_schedule', update_schedule);
    PERFORM bondhu.cron_check('cleanup_schedule', cleanup_schedule);
    IF NOT bondhu.cron_installed() THEN
        RAISE EXCEPTION 'bondhu_schedule: pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, '
                         'run CREATE EXTENSION pg_cron, then call bondhu_schedule() again.';
    END IF;
    -- cron.schedule with a job name replaces that job: calling this again is harmless.
    PERFORM cron.schedule(b.jobname,
                          CASE b.id WHEN 'personality_update' THEN update_schedule ELSE cleanup_schedule END,
                          b.command)
    FROM bondhu.jobs() b;
    RETURN jsonb_build_object('scheduled', bondhu.scheduled_jobs(), 'timezone', 'GMT');
END $$;
COMMENT ON FUNCTION public.bondhu_schedule(text, text) IS
    '(Re)schedules bondhu''s two pg_cron jobs. Schedules are in GMT (pg_cron 1.4).';

CREATE FUNCTION public.bondhu_unschedule() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed jsonb;
BEGIN
    IF NOT bondhu.cron_installed() THEN
        RETURN jsonb_build_object('unscheduled', '[]'::jsonb);
    END IF;
    removed := bondhu.scheduled_jobs();
    PERFORM cron.unschedule(j.jobid) FROM cron.job j JOIN bondhu.jobs() b ON b.jobname = j.jobname;
    RETURN jsonb_build_object('unscheduled', removed);
END $$;
COMMENT ON FUNCTION public.bondhu_unschedule() IS 'Removes bondhu''s pg_cron jobs.';

-- The seed's admin health response. Status rules:
--   unhealthy: the scheduler is not running, or the last personality update failed;
--   degraded:  a scheduled update was missed (none succeeded since the first time the
--              schedule fired after the last success, plus an hour), or the last
--              update completed with errors;
--   healthy:   otherwise.
CREATE FUNCTION public.bondhu_system_health() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg bondhu.settings;
    preloaded boolean := 'pg_cron' = ANY (string_to_array(
        replace(current_setting('shared_preload_libraries'), ' ', ''), ','));
    launcher boolean := EXISTS (SELECT FROM pg_catalog.pg_stat_activity WHERE backend_type = 'pg_cron launcher');
    installed boolean := bondhu.cron_installed();
    jobs jsonb := '[]';
    problems text[] := '{}';
    job_problems text[];
    last_update bondhu.task_runs;
    last_success bondhu.task_runs;
    last_cleanup bondhu.task_runs;
    update_schedule text;
    missed_since timestamptz;
    status text;
    task text;
BEGIN
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    -- Runs left 'running' by a session that died: no run of their task holds its lock.
    FOREACH task IN ARRAY ARRAY['personality_update', 'insights_cleanup'] LOOP
        IF pg_try_advisory_lock(bondhu.lock_key(task)) THEN
            PERFORM bondhu.mark_interrupted_runs(task);
            PERFORM pg_advisory_unlock(bondhu.lock_key(task));
        END IF;
    END LOOP;
    SELECT * INTO last_update FROM bondhu.task_runs t
    WHERE t.task_name = 'personality_update' AND t.status <> 'skipped' ORDER BY t.executed_at DESC LIMIT 1;
    SELECT * INTO last_success FROM bondhu.task_runs t
    WHERE t.task_name = 'personality_update' AND t.status IN ('completed', 'completed_with_errors')
    ORDER BY t.executed_at DESC LIMIT 1;
    SELECT * INTO last_cleanup FROM bondhu.task_runs t
    WHERE t.task_name = 'insights_cleanup' AND t.status <> 'skipped' ORDER BY t.executed_at DESC LIMIT 1;

    IF NOT preloaded THEN problems := problems || 'pg_cron is not in shared_preload_libraries'::text; END IF;
    IF preloaded AND NOT launcher THEN problems := problems || 'the pg_cron launcher is not running'::text; END IF;
    IF NOT installed THEN
        problems := problems || 'pg_cron is not installed in this database'::text;
    ELSE
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', b.id, 'jobname', b.jobname, 'schedule', j.schedule,
                   'trigger', CASE WHEN j.jobid IS NULL THEN NULL ELSE 'cron[' || j.schedule || '] GMT' END,
                   'active', coalesce(j.active, false),
                   'next_run_time', CASE WHEN j.active THEN bondhu.cron_next_run(j.schedule, now()) END,
                   'last_run', (SELECT jsonb_build_object('status', d.status, 'start_time', d.start_time,
                                                          'end_time', d.end_time, 'message', d.return_message)
                                FROM cron.job_run_details d WHERE d.jobid = j.jobid
                                ORDER BY d.runid DESC LIMIT 1)) ORDER BY b.id DESC), '[]'),
               max(j.schedule) FILTER (WHERE b.id = 'personality_update'),
               array_agg(b.jobname || CASE WHEN j.jobid IS NULL THEN ' is not scheduled (call bondhu_schedule())'
                                           ELSE ' is not active' END)
                   FILTER (WHERE j.jobid IS NULL OR NOT j.active)
        INTO jobs, update_schedule, job_problems
        FROM bondhu.jobs() b LEFT JOIN cron.job j ON j.jobname = b.jobname;
        problems := problems || coalesce(job_problems, '{}');
    END IF;

    IF update_schedule IS NOT NULL AND last_success.executed_at IS NOT NULL THEN
        missed_since := bondhu.cron_next_run(update_schedule, last_success.executed_at);
    END IF;
    status := CASE
        WHEN cardinality(problems) > 0 OR last_update.status = 'failed' THEN 'unhealthy'
        WHEN missed_since + interval '1 hour' < now() OR last_update.status = 'completed_with_errors' THEN 'degraded'
        ELSE 'healthy' END;

    RETURN jsonb_build_object(
        'status', status,
        'scheduler_running', cardinality(problems) = 0,
        'problems', to_jsonb(problems),
        'timezone', 'GMT (pg_cron 1.4 evaluates schedules in GMT; for 2 AM local time, shift the hour by the UTC offset)',
        'scheduled_jobs', jobs,
        'last_personality_update', CASE WHEN last_update.id IS NOT NULL THEN jsonb_build_object(
            'task_name', last_update.task_name, 'executed_at', last_update.executed_at,
            'users_processed', last_update.users_processed,
            'successful_updates', last_update.successful_updates,
            'failed_updates', last_update.failed_updates, 'status', last_update.status,
            'error_message', last_update.error_message) END,
        'missed_run_since', CASE WHEN missed_since + interval '1 hour' < now() THEN missed_since END,
        'last_cleanup', CASE WHEN last_cleanup.id IS NOT NULL THEN jsonb_build_object(
            'task_name', last_cleanup.task_name, 'executed_at', last_cleanup.executed_at,
            'records_processed', last_cleanup.records_processed, 'status', last_cleanup.status) END,
        'active_users_count', (SELECT count(DISTINCT i.user_id) FROM bondhu.insights i
                               WHERE i.observed_at > now() - cfg.active_user_window),
        'pending_insights', (SELECT count(*)
                             FROM bondhu.insights i
                             CROSS JOIN bondhu.global_cursor() g
                             LEFT JOIN public.user_personality_profiles p ON p.user_id = i.user_id
                             WHERE i.ingest_pos >= g.xmin_pos
                               AND NOT bondhu.position_applied(i.ingest_pos, g.xmin_pos, g.xmax_pos, g.xip_pos)
                               AND NOT coalesce(bondhu.position_applied(i.ingest_pos, p.applied_xmin,
                                                                        p.applied_xmax, p.applied_xip), false)));
END $$;
COMMENT ON FUNCTION public.bondhu_system_health() IS
    'Scheduler state, jobs with next and last runs, the last update and cleanup, and an overall status.';

-- Schedule the jobs at install when pg_cron is there.
DO $$
BEGIN
    IF bondhu.cron_installed() THEN
        PERFORM public.bondhu_schedule();
    END IF;
END $$;
