-- What operators rely on, with a real pg_cron: a failed run shows as failed in
-- cron.job_run_details; a schedule in the operator's own zone runs; health says what is
-- wrong and what to do; pausing reads as paused; a reinstall keeps settings, schedules
-- and the run log.
CREATE EXTENSION pg_cron;
CREATE EXTENSION bondhu;
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
-- waits (at most 200 s) for the update job's run to end with `status` in pg_cron
CREATE FUNCTION pg_temp.wait_for_job_run(status text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..200 LOOP
        IF EXISTS (SELECT FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                   WHERE j.jobname = 'bondhu_personality_update' AND d.status = wait_for_job_run.status) THEN
            RETURN status;
        END IF;
        PERFORM pg_sleep(1);
    END LOOP;
    RETURN 'timed out';
END $$;

-- A schedule in another zone than pg_cron's (Kathmandu, UTC+5:45): every minute there.
-- pg_cron runs the job at the minute of its next run, and the job moves itself on.
INSERT INTO chat_personality_insights (user_id, adjustments)
VALUES ('00000000-0000-0000-0000-000000000001', '{"openness": 4}');
SELECT s ->> 'command' AS command, s ->> 'timezone' AS zone,
       s ->> 'pg_cron_schedule' ~ '^\d+ \d+ \* \* \*$' AS daily_in_pg_cron_zone
FROM jsonb_array_elements(bondhu_schedule('* * * * *', timezone => 'Asia/Kathmandu') -> 'scheduled') s
WHERE s ->> 'id' = 'personality_update';
SELECT pg_temp.wait_for_job_run('succeeded') AS job_run;
SELECT status, users_processed, records_processed, run_by FROM bondhu.task_runs WHERE users_processed > 0;
SELECT openness FROM user_personality_profiles;

-- Run times pg_cron missed (late by more than minutes, or down) are not skipped: the
-- weekly cleanup (Sunday 03:00 in Kathmandu), last taken three weeks ago, is due once
-- for the three run times missed; then not again (pg_cron starts the job every day).
-- A schedule just set has nothing due.
UPDATE bondhu.schedules SET last_due_at = now() - interval '3 weeks' WHERE id = 'insights_cleanup';
SELECT bondhu.take_due_run('insights_cleanup') AS due;
SELECT bondhu.take_due_run('insights_cleanup') AS due_again;
SELECT last_due_at BETWEEN now() - interval '1 minute' AND now() AS took_every_run_time_until_now
FROM bondhu.schedules WHERE id = 'insights_cleanup';
SELECT bondhu_schedule(cleanup_schedule => '0 3 * * 6') -> 'scheduled' -> 0 ->> 'timezone' AS zone_kept;
SELECT bondhu.take_due_run('insights_cleanup') AS due_when_just_set;
SELECT bondhu_schedule(cleanup_schedule => '0 3 * * 0') IS NOT NULL AS back_to_sunday;

-- A run that fails (a broken trigger of the application refuses every profile): its row
-- is committed, pg_cron records the job's run as failed, health says what to do.
CREATE FUNCTION refuse_everyone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'profiles are read-only' USING ERRCODE = '25006'; END $$;
CREATE TRIGGER refuse_everyone BEFORE UPDATE ON user_personality_profiles
    FOR EACH ROW EXECUTE FUNCTION refuse_everyone();
INSERT INTO chat_personality_insights (user_id, adjustments)
VALUES ('00000000-0000-0000-0000-000000000001', '{"openness": 4}');
DELETE FROM cron.job_run_details;
SELECT bondhu_schedule('* * * * *', timezone => 'UTC') -> 'scheduled' -> 0 ->> 'command' AS command;
SELECT pg_temp.wait_for_job_run('failed') AS job_run;
SELECT d.return_message ~ 'bondhu: a personality update run failed' AS says_which_run_failed
FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname = 'bondhu_personality_update'
  AND d.status = 'failed' LIMIT 1;
SELECT status, error_message, metadata ->> 'sqlstate' AS sqlstate FROM system_tasks
WHERE status <> 'skipped' ORDER BY executed_at DESC LIMIT 1;
SELECT h ->> 'status' AS status, p ~ 'failed with SQLSTATE 25006' AS problem_says_why,
       p ~ 'CALL bondhu_run_update_all\(\)' AS problem_says_what_to_do
FROM bondhu_system_health() h, jsonb_array_elements_text(h -> 'problems') p;
DROP TRIGGER refuse_everyone ON user_personality_profiles;
SELECT bondhu_update_all() ->> 'status' AS fixed;

-- Paused by bondhu_unschedule(): 'paused', with how to resume; the schedules are kept.
SELECT jsonb_array_length(bondhu_unschedule() -> 'unscheduled') AS paused_jobs;
SELECT h ->> 'status' AS status, h -> 'problems' AS problems FROM bondhu_system_health() h;
SELECT bondhu_schedule() -> 'scheduled' -> 0 ->> 'schedule' AS resumed_with;

-- Reinstall: the settings, the schedules (with their zone) and the run log survive
-- DROP and CREATE EXTENSION, like the data.
UPDATE bondhu.settings SET dampening = 0.25;
SELECT bondhu_schedule('15 3 * * *', '0 5 * * 6', 'Asia/Dhaka') IS NOT NULL AS scheduled;
SELECT count(*) AS runs_before FROM system_tasks \gset
DROP EXTENSION bondhu;
SELECT count(*) AS jobs_left FROM cron.job;
-- CREATE EXTENSION says what it kept and what it scheduled
SET client_min_messages = notice;
CREATE EXTENSION bondhu;
RESET client_min_messages;
SELECT dampening FROM bondhu.settings;
SELECT id, schedule, timezone FROM bondhu.schedules ORDER BY id;
SELECT count(*) = :runs_before AS run_log_kept FROM system_tasks;
SELECT jobname, command FROM cron.job ORDER BY jobname;
SELECT to_regclass('public.bondhu_kept_state') AS kept_state_table;

DROP EXTENSION bondhu;
DROP TABLE bondhu_kept_state;
DROP EXTENSION pg_cron;
DROP FUNCTION refuse_everyone();
DROP TABLE chat_personality_insights, entertainment_interactions, user_personality_profiles, personality_profile_history;
