-- DROP EXTENSION never deletes the application's data; CREATE EXTENSION afterwards picks
-- it up again: what was applied stays applied, what is pending is applied once.
CREATE EXTENSION bondhu;
\set ann '''00000000-0000-0000-0000-0000000a0001'''
\set ben '''00000000-0000-0000-0000-0000000b0002'''
\set carl '''00000000-0000-0000-0000-0000000c0003'''
\set dan '''00000000-0000-0000-0000-0000000d0004'''
\set erin '''00000000-0000-0000-0000-0000000e0005'''
-- carl's interaction, not analysed yet: the run below covers its position
INSERT INTO entertainment_interactions (user_id) VALUES (:carl);
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ann, '{"openness": 10}');
INSERT INTO entertainment_interactions (user_id, personality_insights) VALUES (:ann, '{"extraversion": 10}');
SELECT bondhu_update_all() ->> 'insights_processed' AS applied;
-- one more for ann, applied by her own update; one for ben, still pending
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ann, '{"openness": 1}');
SELECT bondhu_update_personality(:ann) ->> 'insights_processed' AS self_applied;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ben, '{"openness": 5}');
-- erin's insight, pending; then dan's own update, whose cursor covers its position
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:erin, '{"neuroticism": 3}');
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:dan, '{"neuroticism": 1}');
SELECT bondhu_update_personality(:dan) ->> 'insights_processed' AS dan_applied;

-- a view another role named like the table DROP EXTENSION keeps its state in does not
-- block it
CREATE VIEW bondhu_kept_state AS SELECT 1 AS squatted;
DROP EXTENSION bondhu;
SELECT (SELECT count(*) FROM chat_personality_insights) AS chat, (SELECT count(*) FROM entertainment_interactions) AS entertainment,
       (SELECT count(*) FROM user_personality_profiles) AS profiles, (SELECT count(*) FROM personality_profile_history) AS history;
SELECT count(*) AS extension_objects_left FROM pg_extension WHERE extname = 'bondhu';
-- the settings, schedules and run log wait in a table only its owner (a superuser) may
-- read, for the next CREATE EXTENSION
SELECT jsonb_array_length(runs) AS runs_kept, settings ? 'dampening' AS settings_kept,
       (SELECT bool_and(a.grantee = c.relowner) FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'bondhu_kept_state'::regclass) AS only_its_owner
FROM bondhu_kept_state;
-- the app keeps writing while bondhu is not installed; a trigger bondhu left behind
-- (not a member) keeps what is new or changed pending and ignores written positions
SELECT tgrelid::regclass AS "table", tgname, tgenabled FROM pg_trigger WHERE tgname LIKE '%bondhu%' ORDER BY 1;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ben, '{"openness": 7}');
INSERT INTO chat_personality_insights (user_id, adjustments, ingest_pos) VALUES (:ben, '{"openness": 0.5}', 2);
UPDATE entertainment_interactions SET personality_insights = NULL WHERE user_id = :ann;
INSERT INTO entertainment_interactions (user_id, personality_insights) VALUES (:ann, '{"extraversion": -10}');
-- an applied insight re-analysed while uninstalled: a new insight, applied once later
UPDATE chat_personality_insights SET adjustments = '{"openness": 2}' WHERE adjustments = '{"openness": 1}';
-- nobody writes a position or a cursor meanwhile: the trigger keeps the stored ones
UPDATE chat_personality_insights SET ingest_pos = 3 WHERE adjustments = '{"openness": 10}';
UPDATE user_personality_profiles SET applied_xmin = NULL, applied_xmax = NULL, applied_xip = NULL;
SELECT count(*) FILTER (WHERE ingest_pos IS NULL) AS pending, count(*) FILTER (WHERE ingest_pos = 3) AS forged
FROM chat_personality_insights;
SELECT count(*) FILTER (WHERE applied_xmin IS NULL) AS profiles_reset FROM user_personality_profiles;
-- an app's BEFORE trigger that analyses carl's interaction when it is touched (it fires
-- before bondhu's stand-in, which therefore sees the new document: pending); dan's
-- profile moved to erin by an operator of the app: refused, as when bondhu is installed
-- (his cursor would cover erin's pending insight)
CREATE FUNCTION set_analysis() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.personality_insights IS NULL AND NEW.user_id = '00000000-0000-0000-0000-0000000c0003' THEN
        NEW.personality_insights := '{"agreeableness": 4}';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER set_analysis BEFORE UPDATE ON entertainment_interactions FOR EACH ROW EXECUTE FUNCTION set_analysis();
UPDATE entertainment_interactions SET created_at = created_at WHERE user_id = :carl;
DROP TRIGGER set_analysis ON entertainment_interactions;
CREATE ROLE uninstall_app;
GRANT bondhu_operator TO uninstall_app;
GRANT SELECT, UPDATE ON user_personality_profiles TO uninstall_app;
SET ROLE uninstall_app;
UPDATE user_personality_profiles SET user_id = :erin WHERE user_id = :dan;
RESET ROLE;
REVOKE ALL ON user_personality_profiles FROM uninstall_app;
DROP ROLE uninstall_app;
SELECT ingest_pos IS NULL AS carl_pending FROM entertainment_interactions WHERE user_id = :carl;
SELECT count(*) AS erin_profiles FROM user_personality_profiles WHERE user_id = :erin;

CREATE EXTENSION bondhu;
SELECT count(*) AS chat_rows, count(DISTINCT id) AS distinct_ids FROM chat_personality_insights;
SELECT count(*) AS triggers_left_behind FROM pg_trigger WHERE tgname LIKE '%bondhu_uninstalled%';
SELECT r ->> 'users_processed' AS users, r ->> 'insights_processed' AS applied FROM bondhu_update_all() r;
SELECT right(user_id::text, 4) AS u, openness, extraversion, agreeableness, neuroticism
FROM user_personality_profiles ORDER BY user_id;
SELECT bondhu_update_all() ->> 'insights_processed' AS nothing_left;
SELECT count(*) AS history_rows FROM personality_profile_history;
-- the tables are members again, with their data in pg_dump's output
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS t(oid) JOIN pg_class c ON c.oid = t.oid
WHERE e.extname = 'bondhu' ORDER BY 1;
\d chat_personality_insights
-- dropping another extension leaves everything attached
CREATE EXTENSION pgtap;
DROP EXTENSION pgtap;
SELECT count(*) AS member_tables FROM bondhu.data_tables() WHERE bondhu.is_member(relation);
SELECT count(*) AS config_tables FROM pg_extension e, unnest(e.extconfig) t WHERE e.extname = 'bondhu';

-- A backend that wrote insights before DROP EXTENSION (a pooled connection) keeps
-- writing after CREATE EXTENSION: its insights are not taken for applied ones.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ben, '{"openness": 1}');
SELECT bondhu_update_all() ->> 'insights_processed' AS applied_before_reinstall;
DROP EXTENSION bondhu;
CREATE EXTENSION bondhu;
SELECT bondhu_update_all() ->> 'insights_processed' AS nothing_pending;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ben, '{"openness": 3}');
SELECT bondhu_update_all() ->> 'insights_processed' AS written_after_reinstall;
SELECT openness FROM user_personality_profiles WHERE user_id = :ben;

-- The insight tables emptied (a purge) while the profiles keep cursors of the newest
-- incarnation: a reinstall starts above those cursors, so what is written next is not
-- taken for applied.
DELETE FROM chat_personality_insights;
DELETE FROM entertainment_interactions;
SELECT incarnation AS incarnation_before FROM bondhu.pipeline_state;
DROP EXTENSION bondhu;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ben, '{"openness": 10}');
CREATE EXTENSION bondhu;
SELECT incarnation AS incarnation_after FROM bondhu.pipeline_state;
SELECT bondhu_update_all() ->> 'insights_processed' AS written_while_uninstalled;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ben, '{"openness": -4}');
SELECT bondhu_update_all() ->> 'insights_processed' AS written_after;
-- the same when an operator deletes the pipeline state row
DELETE FROM chat_personality_insights;
DELETE FROM bondhu.pipeline_state;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:ben, '{"openness": 1}');
SELECT bondhu_update_all() ->> 'insights_processed' AS written_after_state_deleted;
SELECT openness FROM user_personality_profiles WHERE user_id = :ben;

-- DROP EXTENSION under session_replication_role = replica (a restore or migration
-- script) keeps the application's tables too: the event trigger fires ALWAYS.
SET session_replication_role = replica;
DROP EXTENSION bondhu;
RESET session_replication_role;
SELECT (SELECT count(*) FROM chat_personality_insights) AS chat, (SELECT count(*) FROM user_personality_profiles) AS profiles,
       to_regclass('public.bondhu_kept_state') IS NOT NULL AS state_kept;
CREATE EXTENSION bondhu;
SELECT bondhu_update_all() ->> 'insights_processed' AS nothing_pending_after_replica_drop;
