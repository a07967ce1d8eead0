-- pg_cron scheduling: jobs at install, (re)scheduling, refusals, health in each state,
-- a real scheduled run, and DROP EXTENSION leaving no job behind.
CREATE EXTENSION pg_cron;
CREATE EXTENSION bondhu CASCADE;
-- Each cron test runs in a cluster started just before it (scripts/test.sh), so that it
-- has a pg_cron launcher of its own: wait for the launcher (at most 120 s).
DO $$
BEGIN
    FOR i IN 1..120 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher');
        PERFORM pg_sleep(1);
    END LOOP;
END $$;
SELECT jobname, schedule, command, active FROM cron.job ORDER BY jobname;

-- Healthy needs nothing more than the jobs; no run yet is not a missed run.
SELECT h ->> 'status' AS status, h -> 'scheduler_running' AS running, h -> 'problems' AS problems
FROM bondhu_system_health() h;
SELECT j ->> 'id' AS id, j ->> 'trigger' AS trigger, j -> 'active' AS active,
       (j ->> 'next_run_time')::timestamptz > now() AS next_in_future,
       to_char((j ->> 'next_run_time')::timestamptz AT TIME ZONE 'UTC', 'HH24:MI') AS next_gmt,
       j ->> 'next_run_time' ~ '[+-]\d\d:\d\d$' AS iso_with_offset
FROM bondhu_system_health() h, jsonb_array_elements(h -> 'scheduled_jobs') j;
SELECT extract(dow FROM (j ->> 'next_run_time')::timestamptz AT TIME ZONE 'UTC') AS cleanup_weekday
FROM bondhu_system_health() h, jsonb_array_elements(h -> 'scheduled_jobs') j WHERE j ->> 'id' = 'insights_cleanup';

-- Rescheduling is idempotent; an invalid schedule changes nothing.
SELECT bondhu_schedule('30 1 * * *', '0 4 * * 6') -> 'scheduled' -> 0 ->> 'schedule' AS update_schedule;
SELECT bondhu_schedule('30 1 * * *', '0 4 * * 6') IS NOT NULL AS again;
SELECT count(*) AS jobs FROM cron.job;
\set VERBOSITY default
SELECT bondhu_schedule('0 25 * * *');
SELECT bondhu_schedule('0 2 * * *', 'weekly');
-- NULL (or an omitted argument) keeps what the job has
SELECT bondhu_schedule(NULL) -> 'scheduled' -> 0 ->> 'schedule' AS kept;
\set VERBOSITY sqlstate
SELECT bondhu_schedule('0 25 * * *');
\set VERBOSITY default
SELECT jobname, schedule FROM cron.job ORDER BY jobname;

-- Unscheduled: paused, and says how to resume.
SELECT jsonb_array_length(bondhu_unschedule() -> 'unscheduled') AS removed;
SELECT h ->> 'status' AS status, h -> 'problems' AS problems FROM bondhu_system_health() h;
SELECT bondhu_schedule() IS NOT NULL AS rescheduled;
-- A job removed behind bondhu's back (not paused): unhealthy, and says what to do.
SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'bondhu_insights_cleanup';
SELECT h ->> 'status' AS status, h -> 'problems' AS problems FROM bondhu_system_health() h;
SELECT bondhu_schedule() IS NOT NULL AS rescheduled;

-- The last update failed: unhealthy. Completed with errors: degraded.
INSERT INTO bondhu.task_runs (task_name, status, error_message) VALUES ('personality_update', 'failed', 'boom');
SELECT h ->> 'status' AS status, h -> 'last_personality_update' ->> 'status' AS last FROM bondhu_system_health() h;
INSERT INTO bondhu.task_runs (task_name, status, failed_updates) VALUES ('personality_update', 'completed_with_errors', 1);
SELECT h ->> 'status' AS status FROM bondhu_system_health() h;
-- A missed run: the last success is three days old and the job is daily.
DELETE FROM bondhu.task_runs;
INSERT INTO bondhu.task_runs (task_name, status, executed_at) VALUES ('personality_update', 'completed', now() - interval '3 days');
SELECT h ->> 'status' AS status, (h ->> 'missed_run_since')::timestamptz < now() - interval '1 day' AS missed
FROM bondhu_system_health() h;
-- A good run now: healthy.
SELECT bondhu_update_all() ->> 'status' AS status;
SELECT h ->> 'status' AS status, h -> 'missed_run_since' AS missed FROM bondhu_system_health() h;

-- A missed cleanup: the last success is three weeks old and the job is weekly, and its
-- last run was skipped: degraded, and the warning says why.
INSERT INTO bondhu.task_runs (task_name, status, executed_at) VALUES ('insights_cleanup', 'completed', now() - interval '3 weeks');
INSERT INTO bondhu.task_runs (task_name, status, executed_at, error_message)
VALUES ('insights_cleanup', 'skipped', now() - interval '1 day', 'the settings were being changed');
SELECT h ->> 'status' AS status, (h ->> 'missed_cleanup_since')::timestamptz < now() - interval '1 week' AS missed,
       regexp_replace(h -> 'problems' ->> 0, '[0-9a-f-]{36}|(?<=due at ).*?(?=: see)', '…', 'g') AS problem
FROM bondhu_system_health() h;
-- A cleanup now: healthy.
SELECT bondhu_cleanup_insights() ->> 'status' AS status;
SELECT h ->> 'status' AS status, h -> 'missed_cleanup_since' AS missed FROM bondhu_system_health() h;

-- A real pg_cron run: the update job every minute, then wait for it (at most 200 s; on a
-- loaded machine pg_cron may start a job late). If it never comes, a WARNING says what
-- pg_cron had (the launcher, the job, its runs), for whoever reads the diff.
INSERT INTO chat_personality_insights (user_id, adjustments)
VALUES ('00000000-0000-0000-0000-000000000001', '{"openness": 4}');
DELETE FROM bondhu.task_runs;
SELECT bondhu_schedule('* * * * *') IS NOT NULL AS every_minute;
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        IF EXISTS (SELECT FROM bondhu.task_runs WHERE status = 'completed')
           AND EXISTS (SELECT FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                       WHERE j.jobname = 'bondhu_personality_update' AND d.status = 'succeeded') THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(1);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
    RAISE WARNING 'pg_cron did not run the update job in 200 s: %', jsonb_build_object(
        'now', clock_timestamp(),
        'launcher', (SELECT jsonb_agg(jsonb_build_object('pid', a.pid, 'since', a.backend_start,
                                                        'wait', a.wait_event_type || ': ' || a.wait_event))
                     FROM pg_stat_activity a WHERE a.backend_type = 'pg_cron launcher'),
        'jobs', (SELECT jsonb_agg(to_jsonb(j)) FROM cron.job j),
        'runs', (SELECT jsonb_agg(to_jsonb(d)) FROM cron.job_run_details d),
        'bondhu_runs', (SELECT jsonb_agg(to_jsonb(t)) FROM bondhu.task_runs t),
        'waiting', (SELECT jsonb_agg(jsonb_build_object('backend', a.backend_type, 'wait', a.wait_event, 'query', a.query))
                    FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock'));
END $$;
SELECT task_name, status, users_processed, records_processed FROM system_tasks;
SELECT d.status, d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)
WHERE j.jobname = 'bondhu_personality_update' ORDER BY d.runid LIMIT 1;
SELECT openness FROM user_personality_profiles;
SELECT j -> 'last_run' ->> 'status' AS last_run FROM bondhu_system_health() h, jsonb_array_elements(h -> 'scheduled_jobs') j
WHERE j ->> 'id' = 'personality_update';
-- The job ran as bondhu_scheduler, a role that is no superuser.
SELECT DISTINCT t.run_by, r.rolsuper, r.rolcanlogin FROM bondhu.task_runs t JOIN pg_roles r ON r.rolname = t.run_by;
SELECT bondhu_unschedule() IS NOT NULL AS stopped;
SELECT bondhu_schedule('0 2 * * *', '0 3 * * 0') IS NOT NULL AS back_to_nightly;

-- A role that may use pg_cron names a job like bondhu's: it stays that role's job, with
-- its command, and bondhu neither reports, changes, runs as another role, nor removes it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_scheduler') THEN CREATE ROLE app_scheduler LOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_dba') THEN CREATE ROLE app_dba LOGIN; END IF;
END $$;
GRANT USAGE ON SCHEMA cron TO app_scheduler;
GRANT CREATE ON DATABASE bondhu_cron TO app_dba;
GRANT CREATE ON SCHEMA public TO app_dba;
SET ROLE app_scheduler;
SELECT cron.schedule('bondhu_personality_update', '* * * * *', 'SELECT current_user') > 0 AS squatted;
RESET ROLE;
-- any DDL on other extensions, by a superuser or a non-superuser allowed to run it
CREATE EXTENSION pgtap;
DROP EXTENSION pgtap;
SET ROLE app_dba;
CREATE EXTENSION pgtap;
DROP EXTENSION pgtap;
RESET ROLE;
SELECT bondhu_schedule() IS NOT NULL AS rescheduled;
SELECT jobname, username, schedule, command FROM cron.job ORDER BY username, jobname;
SELECT jsonb_array_length(h -> 'scheduled_jobs') AS jobs_in_health,
       h -> 'scheduled_jobs' -> 0 ->> 'schedule' AS update_schedule FROM bondhu_system_health() h;

-- Dropping another extension keeps the jobs; dropping bondhu removes its own, and
-- only its own.
CREATE EXTENSION pgtap;
DROP EXTENSION pgtap;
SELECT jobname, username, schedule, active FROM cron.job ORDER BY username, jobname;
DROP EXTENSION bondhu;
SELECT jobname, username, command FROM cron.job;
DROP EXTENSION pg_cron;
REVOKE CREATE ON DATABASE bondhu_cron FROM app_dba;
REVOKE CREATE ON SCHEMA public FROM app_dba;
-- what DROP EXTENSION keeps, gone too, for the next test
DROP TABLE chat_personality_insights, entertainment_interactions, user_personality_profiles, personality_profile_history,
    bondhu_kept_state;
DROP FUNCTION bondhu_uninstalled_insight(), bondhu_uninstalled_profile();
