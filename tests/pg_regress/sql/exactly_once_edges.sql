-- Exactly once whatever the transaction around an insight does (README: Guarantees).
-- Each case is a way the 0.2.0 review lost or doubled an insight. Every user's
-- openness must end at 50 + 0.1 x the insights the rules count, each once.
CREATE EXTENSION bondhu;
CREATE FUNCTION openness(u int) RETURNS double precision LANGUAGE sql AS $$
    SELECT coalesce((SELECT openness FROM user_personality_profiles
                     WHERE user_id = ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid), 50)
$$;
CREATE FUNCTION uid(u int) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid
$$;

-- 1. Writes after an update in the same transaction, with a rolled-back savepoint (any
-- transaction finishing meanwhile) between: applied by the next update, not lost.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(1), '{"openness": 10}');
BEGIN;
SELECT pg_current_xact_id() IS NOT NULL AS has_xid;
SAVEPOINT s; CREATE TEMP TABLE scratch (x int); ROLLBACK TO s;
SELECT bondhu_update_personality(uid(1)) -> 'insights_processed' AS self_applied;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(1), '{"openness": 10}');
COMMIT;
SELECT bondhu_update_all() -> 'insights_processed' AS applied_next;
SELECT openness(1) AS "52";

-- The same with update_all, for a brand-new user: the profile appears.
BEGIN;
SELECT pg_current_xact_id() IS NOT NULL AS has_xid;
SAVEPOINT s; CREATE TEMP TABLE scratch (x int); ROLLBACK TO s;
SELECT bondhu_update_all() -> 'insights_processed' AS applied;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(2), '{"openness": 10}');
COMMIT;
SELECT bondhu_update_all() -> 'insights_processed' AS applied_next;
SELECT openness(2) AS "51";

-- Written before the update in the same transaction: the one rule is that an update
-- never applies its own transaction's insights; the next update does.
BEGIN;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(3), '{"openness": 10}');
SELECT bondhu_update_personality(uid(3)) -> 'insights_processed' AS own_insight_waits;
COMMIT;
SELECT bondhu_update_personality(uid(3)) -> 'insights_processed' AS applied_next;
SELECT openness(3) AS "51";

-- An app that refreshes the profile from an AFTER INSERT trigger: every insert of a
-- transaction counts, the last one included.
CREATE FUNCTION app_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bondhu_update_personality(NEW.user_id);
    RETURN NULL;
END $$;
CREATE TRIGGER app_refresh AFTER INSERT ON chat_personality_insights
    FOR EACH ROW EXECUTE FUNCTION app_refresh();
BEGIN;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(4), '{"openness": 10}');
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(4), '{"openness": 10}');
COMMIT;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(4), '{"openness": 10}');
DROP TRIGGER app_refresh ON chat_personality_insights;
SELECT bondhu_update_all() IS NOT NULL AS ran;
SELECT openness(4) AS "53";

-- A prepared transaction's insight is pending until COMMIT PREPARED, then applied once.
BEGIN;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(5), '{"openness": 10}');
PREPARE TRANSACTION 'bondhu_edges';
SELECT bondhu_update_all() -> 'insights_processed' AS while_prepared;
COMMIT PREPARED 'bondhu_edges';
SELECT bondhu_update_all() -> 'insights_processed' AS after_commit;
SELECT bondhu_update_all() -> 'insights_processed' AS again;
SELECT openness(5) AS "51";

-- 2. Every way an entertainment analysis can appear counts; re-analysis is one rule:
-- a document that changes (jsonb inequality) is a new insight of the transaction that
-- changed it; writing an equal document again changes nothing. SQL NULL and JSON null
-- are "not analysed yet".
INSERT INTO entertainment_interactions (id, user_id, interaction_data) VALUES
    (uid(601), uid(6), '{}'), (uid(602), uid(6), '{}'), (uid(603), uid(6), '{}'),
    (uid(604), uid(6), '{}'), (uid(605), uid(6), '{}');
INSERT INTO entertainment_interactions (id, user_id, personality_insights) VALUES (uid(606), uid(6), 'null');
SELECT bondhu_update_all() -> 'insights_processed' AS nothing_analysed_yet;
-- the SET list
UPDATE entertainment_interactions SET personality_insights = '{"openness": 10}' WHERE id = uid(601);
-- an app's BEFORE trigger that writes the analysis while the UPDATE sets another column
CREATE FUNCTION app_analyse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.interaction_data ? 'analysis' THEN
        NEW.personality_insights := NEW.interaction_data -> 'analysis';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER app_analyse BEFORE UPDATE ON entertainment_interactions
    FOR EACH ROW EXECUTE FUNCTION app_analyse();
UPDATE entertainment_interactions SET interaction_data = '{"analysis": {"openness": 10}}' WHERE id = uid(602);
DROP TRIGGER app_analyse ON entertainment_interactions;
-- MERGE and ON CONFLICT
MERGE INTO entertainment_interactions e USING (SELECT uid(603) AS id) s ON e.id = s.id
    WHEN MATCHED THEN UPDATE SET personality_insights = '{"openness": 10}';
INSERT INTO entertainment_interactions (id, user_id, personality_insights) VALUES (uid(604), uid(6), '{"openness": 10}')
    ON CONFLICT (id) DO UPDATE SET personality_insights = excluded.personality_insights;
-- under session_replication_role = replica (a migration script; bondhu's triggers are
-- enabled ALWAYS; logical replication's workers: tests/reliability)
SET session_replication_role = replica;
UPDATE entertainment_interactions SET personality_insights = '{"openness": 10}' WHERE id = uid(605);
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(6), '{"openness": 10}');
RESET session_replication_role;
-- after a JSON null placeholder
UPDATE entertainment_interactions SET personality_insights = '{"openness": 10}' WHERE id = uid(606);
-- COPY
COPY entertainment_interactions (id, user_id, personality_insights) FROM STDIN;
00000000-0000-0000-0000-000000000607	00000000-0000-0000-0000-000000000006	{"openness": 10}
\.
SELECT bondhu_update_all() -> 'insights_processed' AS all_eight;
SELECT openness(6) AS "58";
-- an app's BEFORE trigger named to fire after bondhu's: the change still counts
CREATE TRIGGER zzz_app_analyse BEFORE UPDATE ON entertainment_interactions
    FOR EACH ROW EXECUTE FUNCTION app_analyse();
INSERT INTO entertainment_interactions (id, user_id, interaction_data) VALUES (uid(608), uid(6), '{}');
SELECT bondhu_update_all() -> 'insights_processed' AS nothing_yet;
UPDATE entertainment_interactions SET interaction_data = '{"analysis": {"openness": 10}}' WHERE id = uid(608);
SELECT bondhu_update_all() -> 'insights_processed' AS late_trigger_counts;
UPDATE entertainment_interactions SET interaction_data = '{"analysis": {"openness": -10}}' WHERE id = uid(608);
SELECT bondhu_update_all() -> 'insights_processed' AS late_replacement_counts;
DROP TRIGGER zzz_app_analyse ON entertainment_interactions;
SELECT openness(6) AS "58";
-- the same document again, however written: nothing new
UPDATE entertainment_interactions SET personality_insights = '{"openness": 10.0}' WHERE id = uid(601);
UPDATE entertainment_interactions SET personality_insights = personality_insights, interaction_data = '{"seen": true}';
INSERT INTO entertainment_interactions (id, user_id, personality_insights) VALUES (uid(604), uid(6), '{"openness": 10}')
    ON CONFLICT (id) DO UPDATE SET personality_insights = excluded.personality_insights;
SELECT bondhu_update_all() -> 'insights_processed' AS nothing_new;
-- replaced after it was applied: the new document counts too (a re-analysis)
UPDATE entertainment_interactions SET personality_insights = '{"openness": 20}' WHERE id = uid(601);
-- cleared and set again: counts again
UPDATE entertainment_interactions SET personality_insights = NULL WHERE id = uid(602);
UPDATE entertainment_interactions SET personality_insights = '{"openness": 10}' WHERE id = uid(602);
-- replaced before it was applied: only the last document counts
UPDATE entertainment_interactions SET personality_insights = '{"openness": 30}' WHERE id = uid(603);
UPDATE entertainment_interactions SET personality_insights = '{"openness": 5}' WHERE id = uid(603);
SELECT bondhu_update_all() -> 'insights_processed' AS three_new;
SELECT openness(6) AS "61.5";

-- 3. Nobody but a superuser writes a position or a profile's cursor: an operator role,
-- and the tables' owner, get 42501 for an explicit value, a maximal one included.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edge_writer') THEN CREATE ROLE edge_writer; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edge_owner') THEN CREATE ROLE edge_owner; END IF;
END $$;
SET client_min_messages = warning;
GRANT bondhu_operator TO edge_writer, edge_owner;
RESET client_min_messages;
ALTER TABLE chat_personality_insights OWNER TO edge_owner;
ALTER TABLE user_personality_profiles OWNER TO edge_owner;
\set VERBOSITY sqlstate
SET ROLE edge_writer;
INSERT INTO chat_personality_insights (user_id, adjustments, ingest_pos) VALUES (uid(7), '{"openness": 10}', 9223372036854775807);
INSERT INTO chat_personality_insights (user_id, adjustments, ingest_pos) VALUES (uid(7), '{"openness": 10}', 2);
UPDATE chat_personality_insights SET ingest_pos = ingest_pos + 1 WHERE user_id = uid(1);
UPDATE entertainment_interactions SET ingest_pos = 3 WHERE user_id = uid(6);
UPDATE user_personality_profiles SET applied_xmin = 0 WHERE user_id = uid(1);
UPDATE user_personality_profiles SET applied_xip = '{1}' WHERE user_id = uid(1);
INSERT INTO user_personality_profiles (user_id, applied_xmax) VALUES (uid(7), 9223372036854775807);
-- a profile moved to another user would carry a cursor covering that user's insights
UPDATE user_personality_profiles SET user_id = uid(70) WHERE user_id = uid(1);
SET ROLE edge_owner;
INSERT INTO chat_personality_insights (user_id, adjustments, ingest_pos) VALUES (uid(7), '{"openness": 10}', 9223372036854775807);
UPDATE chat_personality_insights SET ingest_pos = 3 WHERE user_id = uid(1);
UPDATE user_personality_profiles SET applied_xmax = 0 WHERE user_id = uid(1);
-- what they may do still works: write insights, change traits
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(7), '{"openness": 10}');
UPDATE user_personality_profiles SET updated_at = updated_at WHERE user_id = uid(1);
RESET ROLE;
-- under session_replication_role = replica too (a data-only restore's setting, which a
-- role may be granted): only a superuser's given position is kept
GRANT SET ON PARAMETER session_replication_role TO edge_writer;
SET ROLE edge_writer;
SET session_replication_role = replica;
INSERT INTO chat_personality_insights (user_id, adjustments, ingest_pos) VALUES (uid(7), '{"openness": 10}', 2);
RESET session_replication_role;
RESET ROLE;
REVOKE SET ON PARAMETER session_replication_role FROM edge_writer;
-- An owner that is no superuser could disable bondhu's triggers, or add its own that
-- bondhu's functions would run with their privileges: bondhu refuses to work on such
-- tables.
\set VERBOSITY default
SELECT bondhu_update_all();
SELECT bondhu_update_personality(uid(7));
DELETE FROM user_personality_profiles WHERE user_id = uid(1);
-- health says so, and what to do; and so for a trigger of bondhu's disabled
ALTER TABLE entertainment_interactions DISABLE TRIGGER zz_bondhu_position_insight;
SELECT p AS problem FROM jsonb_array_elements_text(bondhu_system_health() -> 'problems') p
WHERE p LIKE '%trigger%' OR p LIKE '%owned by%' ORDER BY 1;
ALTER TABLE entertainment_interactions ENABLE ALWAYS TRIGGER zz_bondhu_position_insight;
ALTER TABLE chat_personality_insights OWNER TO CURRENT_USER;
ALTER TABLE user_personality_profiles OWNER TO CURRENT_USER;
SELECT count(*) AS problems_left FROM jsonb_array_elements_text(bondhu_system_health() -> 'problems') p
WHERE p LIKE '%trigger%' OR p LIKE '%owned by%';
SELECT bondhu_update_all() -> 'insights_processed' AS only_the_real_one;
SELECT openness(7) AS "51";

-- The run steps the procedures call (SECURITY DEFINER, so that operators and the
-- scheduler may run the procedures) take nothing but a run id, act only on a run of the
-- caller's own session, and move the global cursor only when every user was done.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(7), '{"openness": 10}');
CREATE TEMP TABLE cursor_before AS SELECT applied_xmin, applied_xmax, applied_xip FROM bondhu.pipeline_state;
GRANT SELECT ON cursor_before TO edge_writer;
SET ROLE edge_writer;
SELECT (bondhu.start_update_run()).id AS run_id \gset
\set VERBOSITY terse
SELECT status AS finished_early, error_message AS why FROM bondhu.finish_run(:'run_id');
\set VERBOSITY sqlstate
SELECT bondhu.run_step(:'run_id', '1');
SELECT bondhu.run_step(gen_random_uuid(), NULL);
SELECT bondhu.finish_run(gen_random_uuid());
-- the steps' own work is not the caller's to call, with a forged run or any other
SELECT bondhu.apply_update_batch(NULL::bondhu.task_runs, NULL);
SELECT bondhu.cleanup_slice(NULL::bondhu.task_runs, NULL);
SELECT (bondhu.start_cleanup_run('90 days')).id AS cleanup_id \gset
SELECT bondhu.run_step(:'cleanup_id', '-1 day');
SELECT bondhu.run_step(:'cleanup_id', 'soon');
SELECT bondhu.run_step(:'cleanup_id', '1000 years') AS slices_left;
\set VERBOSITY default
RESET ROLE;
SELECT (SELECT ROW(applied_xmin, applied_xmax, applied_xip) FROM bondhu.pipeline_state)
       = (SELECT ROW(applied_xmin, applied_xmax, applied_xip) FROM cursor_before) AS global_cursor_unmoved,
       (SELECT count(*) FROM chat_personality_insights WHERE user_id = uid(7)) AS recent_insights_kept;
SELECT bondhu_update_all() -> 'insights_processed' AS still_pending;
SELECT openness(7) AS "52";

-- A writer's first insight in a session makes bondhu read its state as the state's
-- owner: nothing of the writer's (a pg_temp domain named like a type bondhu's query
-- uses, whose CHECK calls the writer's function) runs with those privileges.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edge_attacker') THEN CREATE ROLE edge_attacker LOGIN; END IF;
END $$;
SET client_min_messages = warning;
GRANT bondhu_operator TO edge_attacker;
RESET client_min_messages;
\c - edge_attacker
CREATE FUNCTION pg_temp.escalate() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE edge_attacker SUPERUSER';
    END IF;
    RETURN true;
END $$;
CREATE DOMAIN pg_temp.regclass AS pg_catalog.regclass CHECK (pg_temp.escalate());
CREATE DOMAIN pg_temp.oid AS pg_catalog.oid CHECK (pg_temp.escalate());
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(11), '{"openness": 1}');
\c - postgres
SELECT rolsuper AS attacker_is_superuser FROM pg_roles WHERE rolname = 'edge_attacker';

-- 8. Applied insights edited or moved, profiles deleted: an insight whose document or
-- user changes is a new insight (it counts for its user, again); a deleted profile
-- starts again at 50 with what was pending, and what it had applied is never applied
-- again, whether the global cursor had passed it or only a self-update had.
INSERT INTO chat_personality_insights (id, user_id, adjustments) VALUES (uid(801), uid(8), '{"openness": 10}');
SELECT bondhu_update_all() -> 'insights_processed' AS applied;
UPDATE chat_personality_insights SET adjustments = '{"openness": 20}' WHERE id = uid(801);
SELECT bondhu_update_personality(uid(8)) -> 'insights_processed' AS edited_counts_again;
SELECT openness(8) AS "53";
UPDATE chat_personality_insights SET user_id = uid(9) WHERE id = uid(801);
SELECT bondhu_update_all() -> 'insights_processed' AS moved_counts_for_new_user;
SELECT openness(8) AS "53", openness(9) AS "52";
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(9), '{"openness": 10}');
SELECT bondhu_update_personality(uid(9)) -> 'insights_processed' AS self_applied;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(9), '{"openness": 1}');
DELETE FROM user_personality_profiles WHERE user_id = uid(9);
SELECT bondhu_update_all() -> 'insights_processed' AS only_the_pending_one;
SELECT openness(9) AS "50.1";
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(8), '{"openness": 1}');
TRUNCATE user_personality_profiles;
SELECT bondhu_update_all() -> 'insights_processed' AS only_the_pending_one;
SELECT openness(8) AS "50.1", openness(1) AS "50";

-- A profile deleted, then DROP and CREATE EXTENSION (the global cursor starts again):
-- nothing it had applied is applied again.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (uid(10), '{"openness": 10}');
SELECT bondhu_update_all() -> 'insights_processed' AS applied;
DELETE FROM user_personality_profiles WHERE user_id = uid(10);
DROP EXTENSION bondhu;
CREATE EXTENSION bondhu;
SELECT bondhu_update_all() -> 'insights_processed' AS nothing_again;
SELECT openness(10) AS "50";

-- 9. Cleanup compares cutoffs as moments: with a one-month window, '30 days' is refused
-- exactly when it reaches less far back than a month (after a 31-day month).
UPDATE bondhu.settings SET insight_window = '1 month', insight_retention = '1 month';
CREATE FUNCTION cleanup_refused(older_than interval) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bondhu_cleanup_insights(older_than);
    RETURN false;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN true;
END $$;
SELECT cleanup_refused('30 days') = (now() - interval '30 days' > now() - interval '1 month') AS by_the_calendar,
       cleanup_refused('27 days') AS "27_days_refused", NOT cleanup_refused('31 days') AS "31_days_accepted";

-- Each insight once in the history too.
SELECT sum(insights_processed) AS history_insights FROM personality_profile_history;
