-- Without pg_cron in the database the extension installs, every function works by
-- hand, and health says the scheduler is not running and why.
CREATE EXTENSION bondhu CASCADE;
SELECT extname FROM pg_extension WHERE extname IN ('bondhu', 'pg_cron') ORDER BY 1;
INSERT INTO chat_personality_insights (user_id, adjustments)
VALUES ('00000000-0000-0000-0000-000000000001', '{"openness": 1}');
SELECT r ->> 'status' AS status FROM bondhu_update_all() r;
SELECT h ->> 'status' AS status, h -> 'scheduler_running' AS scheduler_running,
       h -> 'problems' ->> 0 ~ '^pg_cron is not installed in this database: CREATE EXTENSION pg_cron' AS says_not_installed_and_what_to_do,
       h -> 'scheduled_jobs' AS jobs, h -> 'last_personality_update' ->> 'status' AS last_update,
       h -> 'active_users_count' AS active_users, h -> 'pending_insights' AS pending
FROM bondhu_system_health() h;
SELECT bondhu_unschedule();
\set VERBOSITY default
SELECT bondhu_schedule();
SELECT bondhu_schedule('61 * * * *');
