-- bondhu_cleanup_insights: refusals that change nothing, then what it removes.
CREATE EXTENSION bondhu CASCADE;
\set gina '''00000000-0000-0000-0000-00000000919a'''

INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments) VALUES
    (:gina, now() - interval '100 days', '{"openness": 1}'),
    (:gina, now() - interval '91 days', '{"openness": 1}'),
    (:gina, now() - interval '89 days', '{"openness": 1}'),
    (:gina, now(), '{"openness": 1}');
INSERT INTO entertainment_interactions (user_id, created_at, personality_insights) VALUES
    (:gina, now() - interval '120 days', '{"openness": 1}'),
    (:gina, now() - interval '95 days', NULL),
    (:gina, now() - interval '10 days', '{"openness": 1}');

\set VERBOSITY default
SELECT bondhu_cleanup_insights(NULL);
SELECT bondhu_cleanup_insights('0 days');
SELECT bondhu_cleanup_insights('-5 days');
SELECT bondhu_cleanup_insights('29 days');
\set VERBOSITY sqlstate
SELECT bondhu_cleanup_insights(NULL);
SELECT bondhu_cleanup_insights('29 days');
\set VERBOSITY default
SELECT count(*) AS chat_rows FROM chat_personality_insights;
SELECT count(*) AS runs FROM system_tasks;

SELECT r - 'task_id' - 'duration_seconds' AS result FROM bondhu_cleanup_insights() r;
SELECT now() - "timestamp" > interval '90 days' AS old FROM chat_personality_insights ORDER BY "timestamp";
SELECT now() - created_at > interval '90 days' AS old, personality_insights
FROM entertainment_interactions ORDER BY created_at;
SELECT task_name, status, records_processed, metadata ->> 'chat_insights_deleted' AS deleted,
       metadata ->> 'entertainment_insights_cleared' AS cleared
FROM system_tasks;
-- The window itself is allowed; what it removed was never going to be applied.
SELECT r -> 'records_processed' AS n FROM bondhu_cleanup_insights('30 days') r;
SELECT r -> 'insights_processed' AS n, r -> 'trait_changes' -> 'openness' -> 'after' AS openness
FROM bondhu_update_personality(:gina) r;

-- Old run log rows are pruned (run_log_retention, 90 days).
INSERT INTO bondhu.task_runs (task_name, status, executed_at) VALUES
    ('personality_update', 'completed', now() - interval '100 days'),
    ('personality_update', 'completed', now() - interval '80 days');
SELECT r -> 'status' AS status FROM bondhu_cleanup_insights() r;
SELECT count(*) FILTER (WHERE executed_at < now() - interval '90 days') AS older_than_90_days, count(*) AS runs
FROM system_tasks;

-- A cleanup that fails leaves a 'failed' row and removes nothing.
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments)
VALUES (:gina, now() - interval '200 days', '{"openness": 1}');
CREATE FUNCTION keep_chat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'chat insights are on legal hold'; END $$;
CREATE TRIGGER keep_chat BEFORE DELETE ON chat_personality_insights FOR EACH ROW EXECUTE FUNCTION keep_chat();
\set VERBOSITY terse
SELECT r ->> 'status' AS status, r ->> 'error_message' AS error FROM bondhu_cleanup_insights() r;
\set VERBOSITY default
SELECT status, error_message, metadata ->> 'sqlstate' AS sqlstate FROM system_tasks
WHERE task_name = 'insights_cleanup' ORDER BY executed_at DESC LIMIT 1;
SELECT count(*) AS chat_rows_kept FROM chat_personality_insights WHERE "timestamp" < now() - interval '90 days';

-- The procedure (the pg_cron job) cleans up with the insight_retention setting, one day
-- of old insights a transaction (here a week, over insights 100 to 130 days old).
DROP TRIGGER keep_chat ON chat_personality_insights;
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments)
SELECT :gina, now() - interval '100 days' - d * interval '1 day', '{"openness": 1}'
FROM generate_series(0, 30) d;
INSERT INTO entertainment_interactions (user_id, created_at, personality_insights)
SELECT :gina, now() - interval '100 days' - d * interval '1 day', '{"openness": 1}'
FROM generate_series(0, 9) d;
CALL bondhu_run_cleanup('7 days');
SELECT task_name, status, records_processed, metadata ->> 'chat_insights_deleted' AS deleted,
       metadata ->> 'entertainment_insights_cleared' AS cleared
FROM system_tasks ORDER BY executed_at DESC LIMIT 1;
SELECT count(*) AS old_chat_left FROM chat_personality_insights WHERE "timestamp" < now() - interval '90 days';
SELECT count(*) AS old_insights_left FROM entertainment_interactions
WHERE created_at < now() - interval '90 days' AND personality_insights IS NOT NULL;
\set VERBOSITY sqlstate
CALL bondhu_run_cleanup('0 days');
CALL bondhu_run_cleanup(NULL);
\set VERBOSITY default

-- The scheduler's runs clean up with insight_retention only: its steps refuse another
-- interval (operators choose theirs with bondhu_cleanup_insights).
SET ROLE bondhu_scheduler;
\set VERBOSITY sqlstate
SELECT bondhu.start_cleanup_run('30 days');
\set VERBOSITY default
SELECT (bondhu.start_cleanup_run((SELECT insight_retention FROM bondhu.settings))).status AS with_retention;
RESET ROLE;
