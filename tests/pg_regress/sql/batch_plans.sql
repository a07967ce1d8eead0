-- Every batch runs one plan, made once a session, whatever its size (apply_pending).
-- Each insight counts once whatever the batch size and the planner settings: 10,001
-- users, seven rounds of one insight each, batches of every user, of 10,000 and 1, of
-- 10,001, of 5,000 and of 2,500, with the caller's own planner settings (which
-- apply_pending sets for itself and gives back), and at the end with a role's
-- (ALTER ROLE ... SET, as pg_cron's job owner or PostgREST's role may have them).
CREATE EXTENSION bondhu;
CREATE FUNCTION user_n(n integer) RETURNS uuid LANGUAGE sql IMMUTABLE AS
$$ SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid $$;
CREATE PROCEDURE new_round() LANGUAGE sql AS $$
    INSERT INTO chat_personality_insights (user_id, adjustments)
    SELECT user_n(u), jsonb_build_object('openness', 1, 'neuroticism', -(u % 7)) FROM generate_series(1, 10001) u
$$;
-- Every profile after `rounds` rounds: openness 50 + 0.1 a round, neuroticism
-- 50 - 0.1 x (u % 7) a round; the history has each user's insight of each round once.
CREATE FUNCTION wrong_after(rounds integer) RETURNS TABLE (wrong_profiles bigint, history_rows bigint,
                                                           history_insights bigint, pending bigint)
LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM user_personality_profiles p
            WHERE p.openness <> (50 + 0.1 * rounds)::float8
               OR p.neuroticism <> (50 - 0.1 * rounds * (right(p.user_id::text, 12)::int % 7))::float8),
           (SELECT count(*) FROM personality_profile_history),
           (SELECT sum(insights_processed) FROM personality_profile_history),
           (SELECT (bondhu_metrics() -> 'backlog' ->> 'pending_insights')::bigint)
$$;

-- 1: update_all, one batch of 10,001 users
CALL new_round();
SELECT r -> 'users_processed' AS users, r -> 'insights_processed' AS n FROM bondhu_update_all() r;
SELECT * FROM wrong_after(1);
-- 2: batches of 10,000 and 1, the caller in force_custom_plan
SET plan_cache_mode = force_custom_plan;
CALL new_round();
CALL bondhu_run_update_all(10000);
SELECT * FROM wrong_after(2);
SHOW plan_cache_mode;
-- 3: one batch of 10,001 in the same session, the caller in force_generic_plan
SET plan_cache_mode = force_generic_plan;
CALL new_round();
CALL bondhu_run_update_all(10001);
SELECT * FROM wrong_after(3);
SHOW plan_cache_mode;
-- 4: batches of 5,000, without hash aggregation or hash joins
SET enable_hashagg = off;
SET enable_hashjoin = off;
CALL new_round();
CALL bondhu_run_update_all(5000);
SELECT * FROM wrong_after(4);
-- 5: update_all again, the caller still in force_generic_plan
CALL new_round();
SELECT r -> 'users_processed' AS users, r -> 'insights_processed' AS n FROM bondhu_update_all() r;
SELECT * FROM wrong_after(5);
-- 6 and 7: an operator whose role sets the planner (ALTER ROLE ... SET, applied when it
-- connects): update_all, then batches of 2,500
CREATE ROLE batch_planner LOGIN;
GRANT bondhu_operator TO batch_planner;
ALTER ROLE batch_planner SET plan_cache_mode = force_generic_plan;
ALTER ROLE batch_planner SET enable_hashagg = off;
ALTER ROLE batch_planner SET enable_hashjoin = off;
CALL new_round();
\c - batch_planner
SELECT current_setting('plan_cache_mode') AS plan_cache_mode, current_setting('enable_hashagg') AS hashagg,
       current_setting('enable_hashjoin') AS hashjoin;
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users, r -> 'insights_processed' AS n
FROM bondhu_update_all() r;
\c - postgres
SELECT * FROM wrong_after(6);
CALL new_round();
\c - batch_planner
CALL bondhu_run_update_all(2500);
SHOW plan_cache_mode;
\c - postgres
SELECT * FROM wrong_after(7);
SELECT status, count(*) AS runs, sum(users_processed) AS users, sum(records_processed) AS insights
FROM system_tasks GROUP BY status;
DROP ROLE batch_planner;
