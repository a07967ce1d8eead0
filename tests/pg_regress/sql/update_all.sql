-- update_all: every user with pending insights, one user's failure counted and never
-- stopping the others, failed users retried exactly once, the run log.
CREATE EXTENSION bondhu CASCADE;

INSERT INTO chat_personality_insights (user_id, adjustments)
SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid,
       jsonb_build_object('openness', u, 'extraversion', -1)
FROM generate_series(1, 50) u, generate_series(1, 3);
INSERT INTO entertainment_interactions (user_id, personality_insights)
SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, '{"agreeableness": 2}'
FROM generate_series(1, 50, 2) u;

-- User 7's profile update fails (a trigger of the application raises for it).
CREATE FUNCTION refuse_user_7() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id = '00000000-0000-0000-0000-000000000007' AND TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'profile of user 7 is frozen';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_user_7 BEFORE UPDATE ON user_personality_profiles
    FOR EACH ROW EXECUTE FUNCTION refuse_user_7();

-- (terse: a run that does not complete logs a WARNING whose DETAIL names the run's id)
\set VERBOSITY terse
SELECT r - 'task_id' - 'duration_seconds' AS result FROM bondhu_update_all() r;
SELECT task_name, status, users_processed, successful_updates, failed_updates, records_processed,
       error_message, metadata -> 'failed_user_ids' AS failed_user_ids, metadata -> 'errors' AS errors,
       metadata ->> 'sqlstate' AS sqlstate, duration_seconds >= 0 AS timed
FROM system_tasks ORDER BY executed_at;
SELECT count(*) AS profiles, round(sum(openness)::numeric, 6) AS openness_sum, min(extraversion), max(extraversion)
FROM user_personality_profiles WHERE openness <> 50;
-- every successful user: 50 + 0.1 * 3u openness, 50 - 0.3 extraversion
SELECT count(*) AS wrong FROM user_personality_profiles
WHERE user_id <> '00000000-0000-0000-0000-000000000007'
  AND (openness <> 50 + 0.3 * right(user_id::text, 12)::int OR extraversion <> 49.7);

-- Nothing new: the failed user is retried, the others are not touched again.
DROP TRIGGER refuse_user_7 ON user_personality_profiles;
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users, r -> 'insights_processed' AS n
FROM bondhu_update_all() r;
SELECT openness, extraversion, agreeableness FROM user_personality_profiles
WHERE user_id = '00000000-0000-0000-0000-000000000007';
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users, r -> 'insights_processed' AS n
FROM bondhu_update_all() r;
SELECT count(*) AS history_rows, count(DISTINCT user_id) AS users FROM personality_profile_history;

-- A new user whose profile the application refuses (a constraint here; a trigger the
-- same) is one failed user, not a failed run: the others are applied, and the next run
-- applies that user's insight once the profile can be created.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    ('00000000-0000-0000-0000-000000000001', '{"openness": 1}'),
    ('00000000-0000-0000-0000-0000000000ff', '{"openness": 1}');
ALTER TABLE user_personality_profiles ADD CONSTRAINT no_user_ff
    CHECK (user_id <> '00000000-0000-0000-0000-0000000000ff') NOT VALID;
SELECT r ->> 'status' AS status, r ->> 'error_message' AS error FROM bondhu_update_all() r;
SELECT status, users_processed, successful_updates, failed_updates, metadata -> 'failed_user_ids' AS failed_user_ids,
       metadata -> 'errors' AS errors
FROM system_tasks ORDER BY executed_at DESC LIMIT 1;
SELECT openness FROM user_personality_profiles WHERE user_id = '00000000-0000-0000-0000-000000000001';
ALTER TABLE user_personality_profiles DROP CONSTRAINT no_user_ff;
SELECT r ->> 'status' AS status, r -> 'insights_processed' AS n FROM bondhu_update_all() r;
SELECT user_id, openness FROM user_personality_profiles
WHERE user_id IN ('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-0000000000ff') ORDER BY 1;

-- The procedure does the same in batches, committing after each (here 7 users a batch).
INSERT INTO chat_personality_insights (user_id, adjustments)
SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, '{"openness": 1}'
FROM generate_series(1, 50) u;
CREATE TRIGGER refuse_user_7 BEFORE UPDATE ON user_personality_profiles
    FOR EACH ROW EXECUTE FUNCTION refuse_user_7();
-- A run that did not complete ends the CALL with an error after its row is committed,
-- so that pg_cron records the job's run as failed.
CALL bondhu_run_update_all(7);
SELECT status, users_processed, successful_updates, failed_updates, records_processed,
       metadata -> 'failed_user_ids' AS failed_user_ids, metadata -> 'errors' AS errors
FROM system_tasks ORDER BY executed_at DESC LIMIT 1;
SELECT count(*) FILTER (WHERE openness = 50 + 0.3 * right(user_id::text, 12)::int + 0.1) AS users_with_new_insight
FROM user_personality_profiles WHERE user_id <> '00000000-0000-0000-0000-0000000000ff';
DROP TRIGGER refuse_user_7 ON user_personality_profiles;
CALL bondhu_run_update_all();
SELECT status, users_processed, records_processed FROM system_tasks ORDER BY executed_at DESC LIMIT 1;
SELECT count(*) AS wrong FROM user_personality_profiles
WHERE user_id <> '00000000-0000-0000-0000-0000000000ff'
  AND openness <> 50 + 0.3 * right(user_id::text, 12)::int + 0.1 + CASE WHEN user_id = '00000000-0000-0000-0000-000000000001' THEN 0.1 ELSE 0 END;
\set VERBOSITY sqlstate
CALL bondhu_run_update_all(0);
CALL bondhu_run_update_all(NULL);
\set VERBOSITY terse

-- A systematic failure: every user fails with the same error (a broken trigger). The
-- per-user fallback stops after 10 users; the run fails, with the error's SQLSTATE, and
-- every insight stays pending.
INSERT INTO chat_personality_insights (user_id, adjustments)
SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, '{"neuroticism": 1}'
FROM generate_series(1, 40) u;
CREATE FUNCTION refuse_everyone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'profiles are read-only' USING ERRCODE = '25006'; END $$;
CREATE TRIGGER refuse_everyone BEFORE UPDATE ON user_personality_profiles
    FOR EACH ROW EXECUTE FUNCTION refuse_everyone();
SELECT r ->> 'status' AS status, r ->> 'sqlstate' AS sqlstate, r ->> 'error_message' AS error,
       r -> 'users_processed' AS users, r -> 'failed_updates' AS failed FROM bondhu_update_all() r;
SELECT metadata -> 'errors' AS errors, jsonb_array_length(metadata -> 'failed_user_ids') AS ids_kept
FROM system_tasks ORDER BY executed_at DESC LIMIT 1;
-- the same in batches of 3 users: stopped after 10 users too (not one batch at a time),
-- and the CALL fails with the run's SQLSTATE
\set VERBOSITY sqlstate
CALL bondhu_run_update_all(3);
\set VERBOSITY terse
SELECT status, users_processed, failed_updates, error_message FROM system_tasks ORDER BY executed_at DESC LIMIT 1;
-- fewer than 10 users, all failing: no user succeeded, so the run failed
DROP TRIGGER refuse_everyone ON user_personality_profiles;
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users FROM bondhu_update_all() r;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    ('00000000-0000-0000-0000-000000000001', '{"neuroticism": 1}'),
    ('00000000-0000-0000-0000-000000000002', '{"neuroticism": 1}');
CREATE TRIGGER refuse_everyone BEFORE UPDATE ON user_personality_profiles
    FOR EACH ROW EXECUTE FUNCTION refuse_everyone();
SELECT r ->> 'status' AS status, r ->> 'error_message' AS error, r -> 'failed_updates' AS failed
FROM bondhu_update_all() r;
DROP TRIGGER refuse_everyone ON user_personality_profiles;
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users FROM bondhu_update_all() r;
\set VERBOSITY default
\set VERBOSITY default

-- A run left 'running' by a session that died is marked failed by the next health check
-- or run (no run holds the run lock).
INSERT INTO bondhu.task_runs (task_name, status) VALUES ('personality_update', 'running');
SELECT bondhu_system_health() -> 'last_personality_update' ->> 'status' AS seen_by_health;
SELECT status, error_message FROM system_tasks WHERE error_message LIKE 'interrupted%';

-- A run starts only at READ COMMITTED (the run lock reads what other runs committed
-- meanwhile) and with track_activities on (a live run is told from a dead one by its
-- activity): otherwise refused, logging nothing, for updates and cleanups alike.
SELECT count(*) AS runs_before FROM bondhu.task_runs \gset
\set VERBOSITY terse
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT bondhu_update_all();
ROLLBACK;
\set VERBOSITY sqlstate
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT bondhu_cleanup_insights('90 days');
ROLLBACK;
SET track_activities = off;
SELECT bondhu_update_all();
CALL bondhu_run_cleanup();
RESET track_activities;
\set VERBOSITY default
SELECT count(*) - :runs_before AS logged_by_the_refusals FROM bondhu.task_runs;
SELECT r ->> 'status' AS status FROM bondhu_update_all() r;

-- The application's BEFORE INSERT triggers on the profiles fire only for the profiles
-- bondhu creates: a run and a self-service update lock an existing profile (users fb
-- and fc here) without proposing to insert it again.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    ('00000000-0000-0000-0000-0000000000fb', '{"openness": 1}'),
    ('00000000-0000-0000-0000-0000000000fc', '{"openness": 1}');
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users FROM bondhu_update_all() r;
CREATE TABLE proposed_profiles (user_id uuid);
CREATE FUNCTION note_proposed_profile() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.proposed_profiles VALUES (NEW.user_id);
    RETURN NEW;
END $$;
CREATE TRIGGER note_proposed_profile BEFORE INSERT ON user_personality_profiles
    FOR EACH ROW EXECUTE FUNCTION note_proposed_profile();
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    ('00000000-0000-0000-0000-0000000000fc', '{"openness": 1}'),
    ('00000000-0000-0000-0000-0000000000fe', '{"openness": 1}');
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users FROM bondhu_update_all() r;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    ('00000000-0000-0000-0000-0000000000fb', '{"openness": 1}'),
    ('00000000-0000-0000-0000-0000000000fd', '{"openness": 1}');
SELECT r -> 'insights_processed' AS n FROM bondhu_update_personality('00000000-0000-0000-0000-0000000000fb') r;
SELECT r -> 'insights_processed' AS n FROM bondhu_update_personality('00000000-0000-0000-0000-0000000000fd') r;
-- only the new users, fe (by the run) and fd (by the self-service update)
SELECT user_id FROM proposed_profiles ORDER BY 1;
SELECT user_id, openness FROM user_personality_profiles WHERE user_id::text > '00000000-0000-0000-0000-0000000000fa' ORDER BY 1;
