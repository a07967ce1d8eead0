-- The Supabase RPC contract, table-driven with pgTAP: every function and relation x
-- {anon, authenticated self, authenticated other, authenticated without sub,
-- service_role, a plain-Postgres operator role, DBA}. Calls are made as PostgREST makes
-- them: SET LOCAL ROLE <jwt role> with request.jwt.claims set.
SET client_min_messages = warning;
-- Supabase's roles, its default privileges on public, and an auth.uid() like its own.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN BYPASSRLS; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ops') THEN CREATE ROLE ops NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mallory') THEN CREATE ROLE mallory NOLOGIN; END IF;
END $$;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE EXTENSION pgtap;
CREATE EXTENSION bondhu;
GRANT bondhu_operator TO ops;
UPDATE bondhu.settings SET self_update_min_interval = '0';

\set self '''5ec00000-0000-4000-8000-00000000a001'''
\set other '''5ec00000-0000-4000-8000-00000000b002'''
INSERT INTO chat_personality_insights (user_id, adjustments, message_context) VALUES
    (:self, '{"openness": 1}', 'private words'), (:other, '{"openness": 2}', 'other words');
INSERT INTO entertainment_interactions (user_id, personality_insights) VALUES (:self, '{"openness": 1}'), (:other, '{"openness": 1}');
SELECT bondhu_update_personality(:self) IS NOT NULL AND bondhu_update_personality(:other) IS NOT NULL AS profiles_exist;

-- Runs stmt as role with the JWT subject sub (NULL: no claims) and returns 'ok:<first
-- column>' or the SQLSTATE of the error. Everything it did is rolled back.
CREATE FUNCTION as_caller(role name, sub text, stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
BEGIN
    BEGIN
        PERFORM set_config('request.jwt.claims',
                           CASE WHEN sub IS NULL THEN '' ELSE json_build_object('sub', sub, 'role', role)::text END, true);
        IF role <> current_user THEN
            PERFORM set_config('role', role, true);
        END IF;
        EXECUTE stmt INTO result;
        RAISE EXCEPTION USING ERRCODE = 'BH000', MESSAGE = coalesce(result, '');
    EXCEPTION
        WHEN SQLSTATE 'BH000' THEN RETURN 'ok:' || SQLERRM;
        WHEN OTHERS THEN RETURN SQLSTATE;
    END;
END $$;

CREATE TEMP TABLE callers (caller text, role name, sub text);
INSERT INTO callers VALUES
    ('anon', 'anon', NULL),
    ('self', 'authenticated', :self),
    ('other', 'authenticated', :other),
    ('no_sub', 'authenticated', NULL),
    ('service', 'service_role', NULL),
    ('ops', 'ops', NULL),
    ('dba', current_user, NULL);

-- stmt, then the expected outcome per caller: anon, self, other, no_sub, service, ops, dba.
CREATE TEMP TABLE matrix (what text, stmt text, expected text[]);
INSERT INTO matrix VALUES
 ('update own profile', format('SELECT bondhu_update_personality(%L)->>''insights_processed''', :self),
  '{42501,ok:0,42501,42501,ok:0,ok:0,ok:0}'),
 ('live profile', format('SELECT bondhu_profile(%L) ? ''openness''', :self),
  '{42501,ok:true,42501,42501,ok:true,ok:true,ok:true}'),
 ('metrics', 'SELECT bondhu_metrics() ? ''backlog''',
  '{42501,42501,42501,42501,ok:true,ok:true,ok:true}'),
 ('update_all', 'SELECT bondhu_update_all()->>''status''',
  '{42501,42501,42501,42501,ok:completed,ok:completed,ok:completed}'),
 ('cleanup', 'SELECT bondhu_cleanup_insights()->>''status''',
  '{42501,42501,42501,42501,ok:completed,ok:completed,ok:completed}'),
 ('schedule (no pg_cron here)', 'SELECT bondhu_schedule()::text',
  '{42501,42501,42501,42501,55000,55000,55000}'),
 ('unschedule', 'SELECT bondhu_unschedule()->>''unscheduled''',
  '{42501,42501,42501,42501,ok:[],ok:[],ok:[]}'),
 ('health', 'SELECT bondhu_system_health()->>''pending_insights''',
  '{42501,42501,42501,42501,ok:0,ok:0,ok:0}'),
 ('read system_tasks', 'SELECT count(*) FROM system_tasks',
  '{42501,42501,42501,42501,ok:0,ok:0,ok:0}'),
 ('read profiles', 'SELECT string_agg(right(user_id::text, 4), ''|'' ORDER BY user_id) FROM user_personality_profiles',
  '{42501,ok:a001,ok:b002,ok:,ok:a001|b002,ok:a001|b002,ok:a001|b002}'),
 ('read history', 'SELECT count(*) FROM personality_profile_history',
  '{42501,ok:1,ok:1,ok:0,ok:2,ok:2,ok:2}'),
 ('read the profile view', 'SELECT string_agg(right(user_id::text, 4), ''|'' ORDER BY user_id) FROM bondhu_profiles',
  '{42501,ok:a001,ok:b002,ok:,ok:a001|b002,ok:a001|b002,ok:a001|b002}'),
 ('read the history view', 'SELECT count(*) FROM bondhu_profile_history',
  '{42501,ok:1,ok:1,ok:0,ok:2,ok:2,ok:2}'),
 ('read chat insights', 'SELECT string_agg(message_context, ''|'' ORDER BY message_context) FROM chat_personality_insights',
  '{42501,ok:private words,ok:other words,ok:,ok:other words|private words,ok:other words|private words,ok:other words|private words}'),
 ('read entertainment insights', 'SELECT count(*) FROM entertainment_interactions',
  '{42501,ok:1,ok:1,ok:0,ok:2,ok:2,ok:2}'),
 ('write an insight', format('INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (%L, ''{}'') RETURNING 1', :self),
  '{42501,42501,42501,42501,ok:1,ok:1,ok:1}'),
 ('change own profile directly', format('UPDATE user_personality_profiles SET openness = 100 WHERE user_id = %L RETURNING 1', :self),
  '{42501,42501,42501,42501,ok:1,ok:1,ok:1}'),
 ('read settings', 'SELECT dampening::text FROM bondhu.settings',
  '{42501,42501,42501,42501,ok:0.1,ok:0.1,ok:0.1}'),
 ('change settings', 'UPDATE bondhu.settings SET dampening = 1 RETURNING 1',
  '{42501,42501,42501,42501,ok:1,ok:1,ok:1}'),
 -- the procedures commit, which they cannot inside this test's function (a transaction
 -- block): for the callers allowed to run them that shows as 25001, refused up front
 ('run_update_all procedure', 'CALL bondhu_run_update_all()',
  '{42501,42501,42501,42501,25001,25001,25001}'),
 ('run_cleanup procedure', 'CALL bondhu_run_cleanup()',
  '{42501,42501,42501,42501,25001,25001,25001}'),
 ('call an internal function', 'SELECT count(*) FROM bondhu.apply_user_pending(NULL, bondhu.current_cursor(), bondhu.current_cursor(), NULL, NULL)',
  '{42501,42501,42501,42501,42501,42501,ok:0}');

SELECT plan((SELECT count(*)::int FROM matrix) * 7 + 11);
SELECT is(as_caller(c.role, c.sub, m.stmt),
          m.expected[array_position(ARRAY['anon','self','other','no_sub','service','ops','dba'], c.caller)],
          m.what || ' as ' || c.caller)
FROM matrix m CROSS JOIN callers c
ORDER BY m.what, array_position(ARRAY['anon','self','other','no_sub','service','ops','dba'], c.caller);

-- Our JWT subject is Supabase's auth.uid().
SELECT is(as_caller('authenticated', :self, 'SELECT (auth.uid() = bondhu.jwt_subject()::uuid)::text'),
          '42501', 'authenticated cannot call bondhu internals, even the subject helper');
SELECT is(as_caller('authenticated', :self, 'SELECT auth.uid()::text'), 'ok:' || :self, 'auth.uid() sees the sub we use');

-- Bad input through RPC.
SELECT is(as_caller('authenticated', :self, 'SELECT bondhu_update_personality(NULL)::text'), '22004', 'NULL user id');
SELECT is(as_caller('authenticated', :self, 'SELECT bondhu_update_personality(''not-a-uuid'')::text'), '22P02', 'malformed user id');
SELECT is(as_caller('authenticated', 'not-a-uuid', format('SELECT bondhu_update_personality(%L)::text', :self)),
          '42501', 'a sub that is not a uuid');

-- Rate limit: one self-service update per minute that finds something pending (one
-- that finds nothing uses no slot); operators are not limited. (as_caller rolls back
-- what it did: the earlier update is recorded here.)
UPDATE bondhu.settings SET self_update_min_interval = DEFAULT;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:self, '{"openness": 1}');
SELECT is(as_caller('authenticated', :self,
          format('SELECT (bondhu_update_personality(%L)->>''insights_processed'') || (bondhu_update_personality(%L)->>''insights_processed'')', :self, :self)),
          'ok:10', 'a self-service update, then one that finds nothing pending (no slot used)');
INSERT INTO bondhu.self_update_requests (user_id, requested_at) VALUES (:self, now())
ON CONFLICT (user_id) DO UPDATE SET requested_at = now();
SELECT is(as_caller('authenticated', :self, format('SELECT bondhu_update_personality(%L)::text', :self)),
          'PT429', 'a second self-service update within a minute with something pending is refused with PT429');
SELECT bondhu_update_personality(:self) ->> 'insights_processed' AS applied_by_an_operator;
SELECT is(as_caller('authenticated', :self, format('SELECT bondhu_update_personality(%L)->>''insights_processed''', :self)),
          'ok:0', 'within the minute, an update that finds nothing pending is not refused');
SELECT is(as_caller('ops', NULL,
          format('SELECT bondhu_update_personality(%L)->>''insights_processed'' || (bondhu_update_personality(%L)->>''insights_processed'')', :self, :self)),
          'ok:00', 'operators are not rate limited');

-- search_path hijack: look-alike objects early on the caller's search_path are not used.
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO authenticated;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked'; END $$;
CREATE FUNCTION evil.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked'; END $$;
CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.uuid_eq);
CREATE TABLE evil.user_personality_profiles (user_id uuid, openness float8);
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA evil TO authenticated;
SET search_path = evil, pg_catalog, public;
SELECT is(as_caller('authenticated', :self, 'SELECT now()::text'), 'P0001', 'the trap works for plain SQL');
SELECT is(as_caller('authenticated', :self, format('SELECT bondhu_update_personality(%L)->>''insights_processed''', :self)),
          'ok:0', 'bondhu_update_personality ignores look-alikes on the search_path');
RESET search_path;

SELECT * FROM finish();

-- A refusal that reaches the server log, the user id passed as a value (as PostgREST
-- passes parameters): scripts/test.sh checks that the log has the message and no id.
SET bondhu_test.target = '5ec00000-0000-4000-8000-00000000b002';
SET bondhu_test.claims = '{"sub": "5ec00000-0000-4000-8000-00000000a001", "role": "authenticated"}';
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', current_setting('bondhu_test.claims'), true) IS NOT NULL AS signed_in;
SELECT bondhu_update_personality(current_setting('bondhu_test.target')::uuid);
ROLLBACK;
