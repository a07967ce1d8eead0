-- bondhu: health, for operators and monitoring.

-- The run time of the task's job (bondhu.schedules, not paused) that no run of the task
-- has succeeded since: the first time the schedule fired after the last success, when
-- that is more than an hour ago (a run may be late) and no run started since is still
-- under way (a long one). NULL otherwise, and when no run ever succeeded (nothing to
-- measure from).
CREATE FUNCTION bondhu.missed_since(task text) RETURNS timestamptz
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.due
    FROM bondhu.schedules s
    CROSS JOIN LATERAL (SELECT bondhu.cron_next_run(s.schedule, max(t.executed_at), s.timezone) AS due
                        FROM bondhu.task_runs t
                        WHERE t.task_name = task AND t.status IN ('completed', 'completed_with_errors')) d
    WHERE s.id = task AND s.paused_at IS NULL AND d.due + interval '1 hour' < now()
      AND NOT EXISTS (SELECT FROM bondhu.live_runs(task) r WHERE r.executed_at >= d.due)
$$;

-- Why the task's last run was skipped, as a warning's tail; '' when it was not.
CREATE FUNCTION bondhu.last_skip_reason(task text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT format('; its last run (%s) was skipped: %s', t.id, t.error_message)
                     FROM (SELECT * FROM bondhu.task_runs t WHERE t.task_name = task
                           ORDER BY t.executed_at DESC LIMIT 1) t
                     WHERE t.status = 'skipped'), '')
$$;

-- The seed's admin health response. Status rules:
--   unhealthy: the scheduler cannot run bondhu's jobs (pg_cron missing, its launcher
--              down, another database in cron.database_name, a job missing or
--              inactive), exactly once is at risk (a trigger, a table owner), or the
--              last personality update failed;
--   degraded:  a scheduled update or cleanup was missed (none succeeded since the first
--              time its schedule fired after the last success, plus an hour: missed_since),
--              the last update completed with errors, or the last cleanup failed;
--   paused:    bondhu_unschedule() paused the jobs, and nothing else is wrong;
--   healthy:   otherwise.
-- `problems` has one line for every reason, each with what to do.
CREATE FUNCTION public.bondhu_system_health() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg bondhu.settings;
    preloaded boolean := 'pg_cron' = ANY (string_to_array(
        replace(current_setting('shared_preload_libraries'), ' ', ''), ','));
    launcher boolean := EXISTS (SELECT FROM pg_catalog.pg_stat_activity WHERE backend_type = 'pg_cron launcher');
    installed boolean := bondhu.cron_installed();
    cron_database text := current_setting('cron.database_name', true);
    paused boolean := EXISTS (SELECT FROM bondhu.schedules s WHERE s.paused_at IS NOT NULL);
    jobs jsonb := bondhu.scheduled_jobs();
    problems text[] := '{}';
    warnings text[] := '{}';
    scheduler_running boolean;
    last_update bondhu.task_runs;
    last_cleanup bondhu.task_runs;
    missed_since timestamptz;
    cleanup_missed_since timestamptz;
    status text;
    task text;
BEGIN
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    -- Runs left 'running' by a session that moved on.
    FOREACH task IN ARRAY ARRAY['personality_update', 'insights_cleanup'] LOOP
        PERFORM bondhu.mark_interrupted_runs(task);
    END LOOP;
    SELECT * INTO last_update FROM bondhu.task_runs t
    WHERE t.task_name = 'personality_update' AND t.status <> 'skipped' ORDER BY t.executed_at DESC LIMIT 1;
    SELECT * INTO last_cleanup FROM bondhu.task_runs t
    WHERE t.task_name = 'insights_cleanup' AND t.status <> 'skipped' ORDER BY t.executed_at DESC LIMIT 1;

    IF NOT preloaded THEN
        problems := problems || 'pg_cron is not in shared_preload_libraries: add it and restart the server'::text;
    ELSIF NOT launcher THEN
        problems := problems || 'the pg_cron launcher is not running: check the server log for pg_cron''s errors, and restart the server'::text;
    END IF;
    IF NOT installed THEN
        problems := problems || 'pg_cron is not installed in this database: CREATE EXTENSION pg_cron here (cron.database_name must name this database), then SELECT bondhu_schedule()'::text;
    ELSE
        IF cron_database IS DISTINCT FROM current_database() THEN
            problems := problems || format('cron.database_name is %s, not this database (%s): pg_cron runs no job of this database; set cron.database_name = %L and restart the server',
                                           coalesce(cron_database, 'not set'), current_database(), current_database());
        END IF;
        jobs := (SELECT coalesce(jsonb_agg(j || jsonb_build_object('last_run',
                     (SELECT jsonb_build_object('status', d.status, 'start_time', d.start_time,
                                                'end_time', d.end_time, 'message', d.return_message)
                      FROM cron.job_run_details d JOIN bondhu.own_jobs() o ON o.jobid = d.jobid
                      WHERE o.id = j ->> 'id' ORDER BY d.runid DESC LIMIT 1))), '[]')
                 FROM jsonb_array_elements(jobs) j);
        -- what pg_cron says of the jobs' last runs, and whether they still fire when
        -- their schedules say (cron.timezone may have changed, a run time passed by)
        problems := problems || ARRAY(
            SELECT format('the job %s failed in pg_cron at %s: see cron.job_run_details', j ->> 'jobname',
                          j #>> '{last_run,end_time}')
            FROM jsonb_array_elements(jobs) j WHERE j #>> '{last_run,status}' = 'failed');
        problems := problems || ARRAY(
            SELECT format('the job %s does not fire at the times of %s in %s (pg_cron reads its schedules in %s): SELECT bondhu_schedule()',
                          b.jobname, s.schedule, s.timezone, bondhu.cron_timezone())
            FROM bondhu.jobs() b
            JOIN bondhu.schedules s ON s.id = b.id AND s.paused_at IS NULL
            JOIN bondhu.own_jobs() o ON o.id = b.id
            WHERE o.schedule <> bondhu.pg_cron_schedule(s.schedule, s.timezone, now())
               OR o.command <> CASE WHEN bondhu.in_cron_zone(s.schedule, s.timezone)
                                    THEN b.command ELSE b.zoned_command END);
        IF NOT paused THEN
            problems := problems || ARRAY(
                SELECT format('the job %s is %s: SELECT bondhu_schedule()', b.jobname,
                              CASE WHEN j.jobid IS NULL THEN 'not scheduled' ELSE 'not active' END)
                FROM bondhu.jobs() b LEFT JOIN bondhu.own_jobs() j ON j.id = b.id
                WHERE j.jobid IS NULL OR NOT j.active);
        END IF;
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
        JOIN pg_catalog.pg_roles r ON r.oid = d.owner
        WHERE d.kind = 'TABLE' AND NOT r.rolsuper);

    IF last_update.status = 'failed' THEN
        problems := problems || format('the last personality update (%s) failed with SQLSTATE %s: see system_tasks for its error; fix the cause, then CALL bondhu_run_update_all() (the next run retries every pending insight)',
                                       last_update.id, coalesce(last_update.metadata ->> 'sqlstate', 'unknown'));
    END IF;
    -- a job the scheduler cannot run says so above
    IF scheduler_running THEN
        missed_since := bondhu.missed_since('personality_update');
        cleanup_missed_since := bondhu.missed_since('insights_cleanup');
    END IF;
    IF missed_since IS NOT NULL THEN
        warnings := warnings || format('no personality update has succeeded since its run due at %s: see cron.job_run_details for the job bondhu_personality_update%s',
                                       missed_since, bondhu.last_skip_reason('personality_update'));
    END IF;
    IF cleanup_missed_since IS NOT NULL THEN
        warnings := warnings || format('no cleanup has succeeded since its run due at %s: see cron.job_run_details for the job bondhu_insights_cleanup%s',
                                       cleanup_missed_since, bondhu.last_skip_reason('insights_cleanup'));
    END IF;
    IF last_update.status = 'completed_with_errors' THEN
        warnings := warnings || format('the last personality update (%s) completed with %s failed users: see metadata -> ''errors'' in system_tasks; their insights stay pending for the next run',
                                       last_update.id, last_update.failed_updates);
    END IF;
    IF last_cleanup.status = 'failed' THEN
        warnings := warnings || format('the last cleanup (%s) failed with SQLSTATE %s: see system_tasks for its error, then CALL bondhu_run_cleanup()',
                                       last_cleanup.id, coalesce(last_cleanup.metadata ->> 'sqlstate', 'unknown'));
    END IF;
    IF paused THEN
        warnings := warnings || 'bondhu''s jobs are paused by bondhu_unschedule(): SELECT bondhu_schedule() resumes them'::text;
    END IF;
    status := CASE
        WHEN cardinality(problems) > 0 THEN 'unhealthy'
        WHEN missed_since IS NOT NULL OR cleanup_missed_since IS NOT NULL
             OR last_update.status = 'completed_with_errors'
             OR last_cleanup.status = 'failed' THEN 'degraded'
        WHEN paused THEN 'paused'
        ELSE 'healthy' END;

    RETURN jsonb_build_object(
        'status', status,
        'scheduler_running', scheduler_running,
        'problems', to_jsonb(problems || warnings),
        'pg_cron_timezone', bondhu.cron_timezone(),
        'scheduled_jobs', jobs,
        'last_personality_update', CASE WHEN last_update.id IS NOT NULL THEN jsonb_build_object(
            'task_name', last_update.task_name, 'executed_at', last_update.executed_at,
            'users_processed', last_update.users_processed,
            'successful_updates', last_update.successful_updates,
            'failed_updates', last_update.failed_updates, 'status', last_update.status,
            'error_message', last_update.error_message) END,
        'missed_run_since', missed_since,
        'missed_cleanup_since', cleanup_missed_since,
        'last_cleanup', CASE WHEN last_cleanup.id IS NOT NULL THEN jsonb_build_object(
            'task_name', last_cleanup.task_name, 'executed_at', last_cleanup.executed_at,
            'records_processed', last_cleanup.records_processed, 'status', last_cleanup.status) END,
        'active_users_count', (SELECT count(DISTINCT i.user_id) FROM bondhu.insights i
                               WHERE i.observed_at > (SELECT bondhu.moment_before(now(), cfg.active_user_window))),
        'pending_insights', (SELECT b.pending_insights FROM bondhu.backlog() b));
END $$;
COMMENT ON FUNCTION public.bondhu_system_health() IS
    'Scheduler state, jobs with next and last runs, the last update and cleanup, and an overall status.';

