-- bondhu_metrics(): what a monitoring system scrapes, checked against the run log and
-- the data it describes.
CREATE EXTENSION bondhu;
SELECT jsonb_pretty(m - 'as_of') AS empty FROM bondhu_metrics() m;
-- Three users with pending insights, the oldest two days old; one rejected document.
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments) VALUES
    ('00000000-0000-0000-0000-000000000001', now() - interval '2 days', '{"openness": 1}'),
    ('00000000-0000-0000-0000-000000000001', now(), '{"openness": 1}'),
    ('00000000-0000-0000-0000-000000000002', now(), '{"openness": "one"}'),
    ('00000000-0000-0000-0000-000000000003', now(), '{"openness": 1}');
SELECT m -> 'backlog' -> 'pending_insights' AS pending, m -> 'backlog' -> 'users_with_pending_insights' AS users,
       (m -> 'backlog' ->> 'oldest_pending_insight_age_seconds')::bigint BETWEEN 172790 AND 172900 AS two_days
FROM bondhu_metrics() m;
SELECT bondhu_update_all() ->> 'status' AS status;
-- a failed run and a skipped one in the log
INSERT INTO bondhu.task_runs (task_name, status, finished_at, metadata) VALUES
    ('personality_update', 'failed', now(), '{"sqlstate": "25006"}'),
    ('personality_update', 'skipped', now(), '{}');
SELECT t.key AS task, t.value - 'last_success_at' - 'last_run' AS counts,
       t.value -> 'last_run' ->> 'status' AS last_run, (t.value ->> 'last_success_at') IS NOT NULL AS succeeded_once
FROM bondhu_metrics() m, jsonb_each(m -> 'tasks') t ORDER BY 1;
SELECT m -> 'backlog' AS backlog, m -> 'last_24h' AS last_24h FROM bondhu_metrics() m;
-- for operators, not for the app's users
SET ROLE bondhu_operator;
SELECT bondhu_metrics() -> 'backlog' ->> 'pending_insights' AS operator_reads;
RESET ROLE;
DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'metrics_nobody') THEN CREATE ROLE metrics_nobody; END IF; END $$;
SET ROLE metrics_nobody;
\set VERBOSITY sqlstate
SELECT bondhu_metrics();
\set VERBOSITY default
RESET ROLE;
-- A self-service update moves a profile ahead of the global cursor: what it applied is
-- not pending, the other user's new insight is.
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments) VALUES
    ('00000000-0000-0000-0000-000000000001', now(), '{"openness": 1}'),
    ('00000000-0000-0000-0000-000000000004', now(), '{"openness": 1}');
SELECT bondhu_update_personality('00000000-0000-0000-0000-000000000001') ->> 'insights_processed' AS self_applied;
SELECT m -> 'backlog' -> 'pending_insights' AS pending, m -> 'backlog' -> 'users_with_pending_insights' AS users
FROM bondhu_metrics() m;
