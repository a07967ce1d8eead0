-- bondhu: pg_cron jobs and health.
--
-- Two jobs in pg_cron's cron.job when pg_cron is installed in this database:
-- bondhu_personality_update and bondhu_insights_cleanup. They run as the role
-- bondhu_scheduler, which may run the two procedures and nothing else. A job is
-- bondhu's when its name, its role (bondhu_scheduler), its database (this one) and its
-- command are bondhu's: a job another role names the same is that role's, and bondhu
-- neither reads, changes, nor removes it. pg_cron evaluates schedules in one zone for
-- the whole cluster: GMT up to 1.4, the cron.timezone setting from 1.5 on.

CREATE FUNCTION bondhu.cron_installed() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')
$$;

-- The role bondhu's jobs run as: it can log in (pg_cron connects as it, by a
-- background worker or over libpq to cron.host) and may run the two procedures (see
-- security.sql). Never a superuser.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bondhu_scheduler') THEN
        CREATE ROLE bondhu_scheduler LOGIN NOINHERIT;
    END IF;
    ALTER ROLE bondhu_scheduler LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
END $$;
COMMENT ON ROLE bondhu_scheduler IS
    'bondhu''s pg_cron jobs run as this role. It may run bondhu_run_update_all and bondhu_run_cleanup, nothing else.';

-- id in health output, pg_cron job name, command.
CREATE FUNCTION bondhu.jobs() RETURNS TABLE (id text, jobname text, command text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('personality_update', 'bondhu_personality_update', 'CALL public.bondhu_run_update_all()'),
           ('insights_cleanup', 'bondhu_insights_cleanup', 'CALL public.bondhu_run_cleanup()')
$$;

-- bondhu's jobs in cron.job (none without pg_cron).
CREATE FUNCTION bondhu.own_jobs()
RETURNS TABLE (jobid bigint, id text, jobname text, schedule text, command text, active boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.cron_installed() THEN
        RETURN QUERY
        SELECT j.jobid, b.id, j.jobname::text, j.schedule, j.command, j.active
        FROM cron.job j JOIN bondhu.jobs() b ON b.jobname = j.jobname AND b.command = j.command
        WHERE j.username = 'bondhu_scheduler' AND j.database = current_database();
    END IF;
END $$;

-- The zone pg_cron evaluates schedules in: cron.timezone from pg_cron 1.5 on (which has
-- the setting), GMT before.
CREATE FUNCTION bondhu.cron_timezone() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('cron.timezone', true), ''), 'GMT')
$$;

-- The next time a cron schedule fires after a moment, when its fields are read as wall
-- clock time in `zone`, as pg_cron does, daylight-saving changes included: a wall clock
-- time that a change skips runs when the clock jumps; one that comes twice runs the
-- first time. NULL when the schedule never fires.
CREATE FUNCTION bondhu.cron_next_run(schedule text, after timestamptz, zone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wall_clock timestamp := to_timestamp(bondhu.cron_next_run_epoch(
        schedule, extract(epoch FROM (after AT TIME ZONE zone))::double precision)) AT TIME ZONE 'UTC';
    moment timestamptz := wall_clock AT TIME ZONE zone;
BEGIN
    IF moment AT TIME ZONE zone <> wall_clock THEN
        -- skipped: the first minute whose wall clock time is past it (changes are at most
        -- a few hours)
        RETURN (SELECT min(t) FROM generate_series(moment - interval '3 hours', moment, interval '1 minute') t
                WHERE t AT TIME ZONE zone > wall_clock AND t > after);
    END IF;
    -- twice: Postgres reads it as the later time; the earlier one, if there is one
    RETURN coalesce((SELECT min(t) FROM unnest(ARRAY[moment - interval '1 hour', moment - interval '30 minutes']) t
                     WHERE t AT TIME ZONE zone = wall_clock AND t > after), moment);
END $$;

CREATE FUNCTION bondhu.scheduled_jobs() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', j.id, 'jobname', j.jobname, 'schedule', j.schedule,
                                                 'command', j.command, 'active', j.active) ORDER BY j.id DESC),
                    '[]'::jsonb)
    FROM bondhu.own_jobs() j
$$;

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
    -- A job name and role that exist already are updated in place: calling this again
    -- is harmless. Only a superuser may name another role (this function runs as the
    -- extension's owner).
    PERFORM cron.schedule_in_database(b.jobname,
                                      CASE b.id WHEN 'personality_update' THEN update_schedule ELSE cleanup_schedule END,
                                      b.command, current_database(), 'bondhu_scheduler', true)
    FROM bondhu.jobs() b;
    RETURN jsonb_build_object('scheduled', bondhu.scheduled_jobs(), 'timezone', bondhu.cron_timezone());
END $$;
COMMENT ON FUNCTION public.bondhu_schedule(text, text) IS
    '(Re)schedules bondhu''s two pg_cron jobs. Schedules are in pg_cron''s zone: GMT up to pg_cron 1.4, cron.timezone from 1.5.';

CREATE FUNCTION public.bondhu_unschedule() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed jsonb;
BEGIN
    IF NOT bondhu.cron_installed() THEN
        RETURN jsonb_build_object('unscheduled', '[]'::jsonb);
    END IF;
    removed := bondhu.scheduled_jobs();
    PERFORM cron.unschedule(j.jobid) FROM bondhu.own_jobs() j;
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
    scheduler_running boolean;
    job_problems text[];
    last_update bondhu.task_runs;
    last_success bondhu.task_runs;
    last_cleanup bondhu.task_runs;
    update_schedule text;
    missed_since timestamptz;
    status text;
    task text;
    zone text := bondhu.cron_timezone();
BEGIN
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    -- Runs left 'running' by a session that moved on.
    FOREACH task IN ARRAY ARRAY['personality_update', 'insights_cleanup'] LOOP
        PERFORM bondhu.mark_interrupted_runs(task);
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
                   'trigger', CASE WHEN j.jobid IS NULL THEN NULL ELSE 'cron[' || j.schedule || '] ' || zone END,
                   'active', coalesce(j.active, false),
                   'next_run_time', CASE WHEN j.active THEN bondhu.cron_next_run(j.schedule, now(), zone) END,
                   'last_run', (SELECT jsonb_build_object('status', d.status, 'start_time', d.start_time,
                                                          'end_time', d.end_time, 'message', d.return_message)
                                FROM cron.job_run_details d WHERE d.jobid = j.jobid
                                ORDER BY d.runid DESC LIMIT 1)) ORDER BY b.id DESC), '[]'),
               max(j.schedule) FILTER (WHERE b.id = 'personality_update'),
               array_agg(b.jobname || CASE WHEN j.jobid IS NULL THEN ' is not scheduled (call bondhu_schedule())'
                                           ELSE ' is not active' END)
                   FILTER (WHERE j.jobid IS NULL OR NOT j.active)
        INTO jobs, update_schedule, job_problems
        FROM bondhu.jobs() b LEFT JOIN bondhu.own_jobs() j ON j.id = b.id;
        problems := problems || coalesce(job_problems, '{}');
    END IF;
    scheduler_running := cardinality(problems) = 0;
    -- what exactly once rests on: bondhu's triggers, enabled ALWAYS, on tables that
    -- superusers own
    problems := problems || ARRAY(
        SELECT format('bondhu''s trigger %s on %s is %s: insights may be lost or counted twice '
                      '(a superuser: ALTER TABLE %s ENABLE ALWAYS TRIGGER %I)',
                      d.name, d.relation, CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'not enabled ALWAYS' END,
                      d.relation, d.name)
        FROM bondhu.data_triggers() d
        LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = d.relation AND t.tgname = d.name
        WHERE t.oid IS NULL OR t.tgenabled <> 'A');
    problems := problems || ARRAY(
        SELECT format('%s is owned by %s, which is not a superuser: bondhu refuses to run '
                      '(a superuser: ALTER TABLE %s OWNER TO a superuser)', d.relation, r.rolname, d.relation)
        FROM bondhu.data_tables() d
        JOIN pg_catalog.pg_class c ON c.oid = d.relation
        JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
        WHERE d.kind = 'TABLE' AND NOT r.rolsuper);

    IF update_schedule IS NOT NULL AND last_success.executed_at IS NOT NULL THEN
        missed_since := bondhu.cron_next_run(update_schedule, last_success.executed_at, zone);
    END IF;
    status := CASE
        WHEN cardinality(problems) > 0 OR last_update.status = 'failed' THEN 'unhealthy'
        WHEN missed_since + interval '1 hour' < now() OR last_update.status = 'completed_with_errors' THEN 'degraded'
        ELSE 'healthy' END;

    RETURN jsonb_build_object(
        'status', status,
        'scheduler_running', scheduler_running,
        'problems', to_jsonb(problems),
        'timezone', zone,
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
