-- The roles the README names get exactly what it says, created as Supabase creates
-- them (anon and authenticated NOLOGIN NOINHERIT, service_role NOLOGIN NOINHERIT
-- BYPASSRLS): with and without Supabase's default privileges, and whether they exist
-- before or after CREATE EXTENSION (then a superuser runs bondhu.grant_privileges()).
SET client_min_messages = warning;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'roles_ops') THEN CREATE ROLE roles_ops NOLOGIN; END IF;
    -- (CREATE EXTENSION creates it; an earlier test of the suite has)
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bondhu_operator') THEN CREATE ROLE bondhu_operator NOLOGIN; END IF;
END $$;
GRANT bondhu_operator TO roles_ops;
CREATE FUNCTION create_supabase_roles() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN NOINHERIT; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; END IF;
END $$;
-- Supabase's default privileges: everything new in public for its three roles.
CREATE FUNCTION supabase_default_privileges() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
END $$;
CREATE FUNCTION drop_everything() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DROP EXTENSION IF EXISTS bondhu;
    DROP TABLE IF EXISTS chat_personality_insights, entertainment_interactions, user_personality_profiles,
                         personality_profile_history;
    DROP FUNCTION IF EXISTS bondhu_uninstalled_insight(), bondhu_uninstalled_profile();
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated, service_role;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON FUNCTIONS FROM anon, authenticated, service_role;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM anon, authenticated, service_role;
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM anon, authenticated, service_role;
        DROP ROLE anon, authenticated, service_role;
    END IF;
END $$;

-- Runs stmt as role (as PostgREST does: SET LOCAL ROLE, the JWT's claims) and returns
-- 'ok' or the SQLSTATE. Everything it did is rolled back.
CREATE FUNCTION as_role(role name, stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM set_config('request.jwt.claims',
                           json_build_object('sub', '00000000-0000-0000-0000-0000000000a1', 'role', role)::text, true);
        PERFORM set_config('role', role, true);
        EXECUTE stmt;
        RAISE EXCEPTION USING ERRCODE = 'BH000';
    EXCEPTION
        WHEN SQLSTATE 'BH000' THEN RETURN 'ok';
        WHEN OTHERS THEN RETURN SQLSTATE;
    END;
END $$;

-- What each role may do, in one table: the README's contract, checked by calling.
CREATE FUNCTION contract() RETURNS TABLE (role name, what text, outcome text) LANGUAGE sql AS $$
    SELECT r.role, c.what, as_role(r.role, c.stmt)
    FROM (VALUES ('anon'::name), ('authenticated'), ('service_role'), ('roles_ops')) AS r(role),
         (VALUES (1, 'update own profile', 'SELECT bondhu_update_personality(''00000000-0000-0000-0000-0000000000a1'')'),
                 (2, 'update_all', 'SELECT bondhu_update_all()'),
                 (3, 'health', 'SELECT bondhu_system_health()'),
                 (4, 'insert an insight', 'INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (''00000000-0000-0000-0000-0000000000a1'', ''{}'')'),
                 (5, 'read own profile', 'SELECT FROM user_personality_profiles'),
                 (6, 'read settings', 'SELECT FROM bondhu.settings'),
                 (7, 'change settings', 'UPDATE bondhu.settings SET dampening = 0.2'),
                 (8, 'setval history ids', 'SELECT setval(''personality_profile_history_id_seq'', 1000)'),
                 (9, 'read the run log', 'SELECT FROM system_tasks'),
                 (10, 'create a trigger', 'CREATE TRIGGER t BEFORE UPDATE ON user_personality_profiles FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()')) AS c(n, what, stmt)
    ORDER BY c.n, r.role
$$;
-- Which of bondhu's internal functions (schema bondhu) a role may execute: none for
-- anon and authenticated, SECURITY DEFINER helpers included.
CREATE FUNCTION internals_executable(role name) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'bondhu'
      AND has_function_privilege(role, p.oid, 'EXECUTE')
$$;
-- Who but a table's owner may create triggers on the tables bondhu writes (its
-- functions' rights would run them): nobody, whatever default privileges gave.
CREATE FUNCTION trigger_holders() RETURNS TABLE (relation regclass, grantee text) LANGUAGE sql AS $$
    SELECT c.oid::regclass, CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
    FROM pg_class c, aclexplode(c.relacl) a
    WHERE (c.relnamespace::regnamespace::text = 'bondhu'
           OR c.oid IN (to_regclass('chat_personality_insights'), to_regclass('entertainment_interactions'),
                        to_regclass('user_personality_profiles'), to_regclass('personality_profile_history'),
                        to_regclass('system_tasks')))
      AND a.privilege_type = 'TRIGGER' AND a.grantee <> c.relowner
    ORDER BY 1, 2
$$;
CREATE FUNCTION summary() RETURNS TABLE (what text, anon text, authenticated text, service_role text, roles_ops text)
LANGUAGE sql AS $$
    SELECT what, max(outcome) FILTER (WHERE role = 'anon'), max(outcome) FILTER (WHERE role = 'authenticated'),
           max(outcome) FILTER (WHERE role = 'service_role'), max(outcome) FILTER (WHERE role = 'roles_ops')
    FROM contract() GROUP BY what ORDER BY min(CASE what WHEN 'update own profile' THEN 1 ELSE 2 END), what
$$;

-- 1. Roles first, without Supabase's default privileges.
SELECT create_supabase_roles();
CREATE EXTENSION bondhu;
SELECT * FROM summary();
SELECT internals_executable('anon') AS anon_internals, internals_executable('authenticated') AS authenticated_internals;
SELECT * FROM trigger_holders();

-- 2. Roles first, with Supabase's default privileges: the same.
SELECT drop_everything();
SELECT create_supabase_roles();
SELECT supabase_default_privileges();
CREATE EXTENSION bondhu;
SELECT * FROM summary();
SELECT internals_executable('anon') AS anon_internals, internals_executable('authenticated') AS authenticated_internals;
SELECT * FROM trigger_holders();

-- 3. Roles after CREATE EXTENSION: nothing until a superuser runs grant_privileges().
SELECT drop_everything();
CREATE EXTENSION bondhu;
SELECT create_supabase_roles();
SELECT supabase_default_privileges();
SELECT what, service_role FROM summary() WHERE what IN ('update_all', 'insert an insight');
SELECT bondhu.grant_privileges();
SELECT * FROM summary();
SELECT internals_executable('anon') AS anon_internals, internals_executable('authenticated') AS authenticated_internals;
SELECT * FROM trigger_holders();
-- who else may run grant_privileges: nobody
SELECT as_role('service_role', 'SELECT bondhu.grant_privileges()') AS service_role_regrants,
       as_role('roles_ops', 'SELECT bondhu.grant_privileges()') AS ops_regrant;
-- TRIGGER granted on by a role with the grant option, on a table another superuser
-- owns: grant_privileges takes both back
CREATE ROLE roles_other_owner SUPERUSER NOLOGIN;
ALTER TABLE user_personality_profiles OWNER TO roles_other_owner;
SET ROLE roles_other_owner;
GRANT TRIGGER ON user_personality_profiles TO roles_ops WITH GRANT OPTION;
SET ROLE roles_ops;
GRANT TRIGGER ON user_personality_profiles TO service_role;
RESET ROLE;
SELECT * FROM trigger_holders();
SELECT bondhu.grant_privileges();
SELECT * FROM trigger_holders();
ALTER TABLE user_personality_profiles OWNER TO CURRENT_USER;
DROP ROLE roles_other_owner;
SELECT drop_everything();
