-- The bondhu demo: the seed's worked example, a nightly run over synthetic users, and
-- the run log.
\set QUIET on
\pset footer off
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION bondhu CASCADE;

\echo '\n-- 1. The worked example: two chat insights and two entertainment insights'
INSERT INTO chat_personality_insights (user_id, adjustments, message_context) VALUES
    ('00000000-0000-0000-0000-00000000a11c', '{"openness": 2.0}', 'creative language, curiosity'),
    ('00000000-0000-0000-0000-00000000a11c', '{"conscientiousness": 1.5}', 'planning, goals');
INSERT INTO entertainment_interactions (user_id, content_type, interaction_type, personality_insights) VALUES
    ('00000000-0000-0000-0000-00000000a11c', 'music', 'like', '{"openness": 1.0}'),
    ('00000000-0000-0000-0000-00000000a11c', 'video', 'watch', '{"extraversion": -0.5}');
\x on
SELECT jsonb_pretty(bondhu_update_personality('00000000-0000-0000-0000-00000000a11c')) AS first_update;
\echo '-- Updating again applies nothing twice:'
SELECT r -> 'insights_processed' AS insights_processed, r -> 'trait_changes' -> 'openness' AS openness
FROM bondhu_update_personality('00000000-0000-0000-0000-00000000a11c') AS r;
\x off

\echo '\n-- 2. 2,000 synthetic users with 20 chat and 10 entertainment insights each, then update_all'
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid,
       now() - (random() * interval '29 days'),
       jsonb_build_object('openness', round((random() * 4 - 2)::numeric, 2),
                          'agreeableness', round((random() * 4 - 2)::numeric, 2),
                          'neuroticism', round((random() * 4 - 2)::numeric, 2))
FROM generate_series(1, 2000) u, generate_series(1, 20);
INSERT INTO entertainment_interactions (user_id, content_type, created_at, personality_insights)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid, 'game',
       now() - (random() * interval '29 days'),
       jsonb_build_object('extraversion', round((random() * 4 - 2)::numeric, 2),
                          'conscientiousness', round((random() * 4 - 2)::numeric, 2))
FROM generate_series(1, 2000) u, generate_series(1, 10);
-- and a few documents the pipeline must reject or partly ignore
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    ('00000000-0000-0000-0000-000000000001', '[1, 2]'),
    ('00000000-0000-0000-0000-000000000001', '{"openness": "NaN"}'),
    ('00000000-0000-0000-0000-000000000001', '{"openness": 1e300}'),
    ('00000000-0000-0000-0000-000000000001', '{"openness": 0.5, "humour": 3}');
SELECT jsonb_pretty(bondhu_update_all()) AS update_all;
\echo '-- The second run finds nothing new:'
SELECT bondhu_update_all() ->> 'insights_processed' AS insights_processed_by_second_run;

\echo '\n-- 3. The run log'
SELECT task_name, status, users_processed, successful_updates, failed_updates,
       records_processed, metadata ->> 'rejected_insights' AS rejected, duration_seconds
FROM system_tasks ORDER BY executed_at;
\echo '\n-- 4. A profile and its history'
SELECT user_id, round(openness::numeric, 2) AS openness, round(extraversion::numeric, 2) AS extraversion,
       round(neuroticism::numeric, 2) AS neuroticism
FROM user_personality_profiles ORDER BY user_id LIMIT 3;
SELECT trigger, insights_processed, openness_before, openness_after
FROM personality_profile_history WHERE user_id = '00000000-0000-0000-0000-00000000a11c';

\echo '\n-- 5. Health: the scheduler runs the nightly jobs as bondhu_scheduler'
DO $$
BEGIN
    FOR i IN 1..30 LOOP  -- the launcher starts with the cluster: wait for it
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher');
        PERFORM pg_sleep(1);
    END LOOP;
END $$;
SELECT h ->> 'status' AS status, h -> 'scheduler_running' AS scheduler_running, h -> 'problems' AS problems
FROM bondhu_system_health() h;
SELECT jobname, username, schedule, command FROM cron.job ORDER BY jobname;
