-- bondhu: who may do what.
--
-- Three kinds of callers: the app's frontend through Supabase RPC (PostgREST runs each
-- request as SET LOCAL ROLE anon|authenticated|service_role with request.jwt.claims set),
-- pg_cron, and DBAs. Operators are superusers and members of the role bondhu_operator
-- (Supabase's service_role is made one); they may do everything, for any user. An
-- authenticated user may update and read only their own profile. Nobody else may do
-- anything. Every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bondhu_operator') THEN
        CREATE ROLE bondhu_operator NOLOGIN;
    END IF;
END $$;
COMMENT ON ROLE bondhu_operator IS
    'bondhu operators: run and schedule the pipeline, read health and the run log, update any profile. GRANT bondhu_operator TO <role>.';

-- The role the caller acts as: the one set by SET ROLE (as PostgREST does), otherwise
-- the session's. current_user cannot tell, inside a SECURITY DEFINER function.
CREATE FUNCTION bondhu.calling_role() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user
                ELSE current_setting('role')::name END
$$;

-- Is the calling role a superuser or a member of bondhu_operator? (calling_role once, in
-- its own subquery: compared row by row, it was called for every role, ~50 us a call.)
CREATE FUNCTION bondhu.caller_is_operator() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT r.rolsuper OR pg_has_role(r.oid, 'bondhu_operator', 'MEMBER')
                     FROM pg_catalog.pg_roles r WHERE r.rolname = (SELECT bondhu.calling_role())), false)
$$;

-- The signed-in user of a PostgREST request (Supabase's auth.uid(), without needing
-- the auth schema): the JWT's sub claim.
CREATE FUNCTION bondhu.jwt_subject() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
                    nullif(current_setting('request.jwt.claim.sub', true), ''))
$$;

-- Refuses, with 42501, a caller who is not the signed-in owner of the profile. The
-- messages name no user: they reach the server log.
CREATE FUNCTION bondhu.require_own_profile(target uuid, function_name text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    subject text := bondhu.jwt_subject();
    subject_id uuid;
BEGIN
    IF subject IS NULL THEN
        RAISE EXCEPTION '%: no signed-in user', function_name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'request.jwt.claims has no sub claim.';
    END IF;
    BEGIN
        subject_id := subject::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION '%: the signed-in user id is not a uuid', function_name
            USING ERRCODE = 'insufficient_privilege';
    END;
    IF subject_id <> target THEN
        RAISE EXCEPTION '%: a user may only read or update their own profile', function_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- Self-service updates: at most one per self_update_min_interval per user.
CREATE TABLE bondhu.self_update_requests (
    user_id uuid PRIMARY KEY,
    requested_at timestamptz NOT NULL
);

-- When the user `target` may next make a self-service update: `min_interval` (the
-- setting self_update_min_interval, as the caller read it) after their last one; NULL
-- when they have made none. Read with the profile locked (update_personality), it holds
-- until the caller commits.
CREATE FUNCTION bondhu.next_self_update_at(target uuid, min_interval interval) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.requested_at + min_interval FROM bondhu.self_update_requests r WHERE r.user_id = target
$$;

-- Refuses a self-service update before `retry_at` (next_self_update_at) with SQLSTATE
-- PT429 (PostgREST answers HTTP 429), saying how long to wait (in its DETAIL as JSON:
-- {"retry_after_seconds", "retry_at"}).
CREATE FUNCTION bondhu.refuse_self_update(retry_at timestamptz, min_interval interval) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wait_seconds integer := greatest(1, ceil(extract(epoch FROM retry_at - clock_timestamp())))::integer;
BEGIN
    RAISE EXCEPTION 'bondhu_update_personality: too many updates, try again in % seconds', wait_seconds
        USING ERRCODE = 'PT429',
              -- for clients: PostgREST passes it on as the error's "details"
              DETAIL = jsonb_build_object('retry_after_seconds', wait_seconds, 'retry_at', retry_at)::text,
              HINT = format('A user may update their own profile once every %s.', min_interval);
END $$;

-- Records a self-service update of `target` now: the start of its next interval. Called
-- with the profile locked, so two concurrent requests are seen in turn. Now is the wall
-- clock (clock_timestamp()), not the transaction's start (now()): a slot stamped with
-- the start of a transaction held open before the call would end that much early.
CREATE FUNCTION bondhu.note_self_update(target uuid) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO bondhu.self_update_requests AS r (user_id, requested_at) VALUES (target, clock_timestamp())
    ON CONFLICT (user_id) DO UPDATE SET requested_at = excluded.requested_at;
$$;

------------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC, then granted deliberately, from one list.
------------------------------------------------------------------------------------
-- The public API (functions, procedures, and views as 'TABLE'), and who may call or read
-- each: 'operators' (bondhu_operator, service_role),
-- 'scheduler' too (bondhu_scheduler, the role of the pg_cron jobs), 'authenticated'
-- too (the function checks that the signed-in user is the profile's owner), 'everyone'
-- (a pure function of its argument).
CREATE FUNCTION bondhu.public_api() RETURNS TABLE (kind text, signature text, callers text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('FUNCTION', 'public.bondhu_update_personality(uuid)', 'authenticated'),
           ('FUNCTION', 'public.bondhu_profile(uuid)', 'authenticated'),
           ('FUNCTION', 'public.bondhu_insight_problems(jsonb)', 'everyone'),
           ('TABLE', 'public.bondhu_profiles', 'authenticated'),
           ('TABLE', 'public.bondhu_profile_history', 'authenticated'),
           ('FUNCTION', 'public.bondhu_update_all()', 'operators'),
           ('PROCEDURE', 'public.bondhu_run_update_all(integer)', 'scheduler'),
           ('FUNCTION', 'public.bondhu_cleanup_insights(interval)', 'operators'),
           ('PROCEDURE', 'public.bondhu_run_cleanup(interval)', 'scheduler'),
           ('FUNCTION', 'public.bondhu_schedule(text, text, text)', 'operators'),
           ('FUNCTION', 'public.bondhu_unschedule()', 'operators'),
           ('FUNCTION', 'public.bondhu_system_health()', 'operators'),
           ('FUNCTION', 'public.bondhu_metrics()', 'operators')
$$;

-- Grants what the README's security table says, to the roles that exist now, and takes
-- back what Supabase's default privileges give anon and authenticated on new objects.
-- Run by CREATE EXTENSION and every upgrade; a superuser runs it again after creating
-- anon, authenticated or service_role later: SELECT bondhu.grant_privileges();
-- service_role is NOINHERIT on Supabase, so it gets the operators' privileges
-- directly, not through its membership in bondhu_operator.
CREATE FUNCTION bondhu.grant_privileges() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
    api record;
    admin record;
    held record;
    privilege text;
    grantee text;
    operators text[] := ARRAY['bondhu_operator'];
    nobody text[] := ARRAY['PUBLIC'];
    tables constant text := 'public.chat_personality_insights, public.entertainment_interactions, '
                            'public.user_personality_profiles, public.personality_profile_history';
    -- what a procedure's run calls as its caller (its steps are SECURITY DEFINER)
    run_steps constant text := 'bondhu.refuse_transaction_block(text, text), bondhu.in_transaction_block(), '
        'bondhu.start_update_run(), bondhu.start_cleanup_run(interval), bondhu.run_step(uuid, text), '
        'bondhu.finish_run(uuid), bondhu.run_outcome(bondhu.task_runs), bondhu.take_due_run(text)';
    run_procedures constant text := 'bondhu.run_in_steps(bondhu.task_runs, text), bondhu.run_if_due(text)';
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        GRANT bondhu_operator TO service_role;
        operators := operators || 'service_role'::text;
    END IF;
    nobody := nobody || ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
                              WHERE r.rolname IN ('anon', 'authenticated'));

    -- Nobody but superusers administers bondhu's roles: a role with CREATEROLE that
    -- created one of them before CREATE EXTENSION holds ADMIN on it (PostgreSQL 16 on),
    -- and could make itself an operator.
    FOR admin IN SELECT m.roleid::regrole::text AS role_name, m.member::regrole::text AS member,
                        m.grantor::regrole::text AS grantor
               FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.member
               WHERE m.roleid IN (SELECT oid FROM pg_catalog.pg_roles WHERE rolname IN ('bondhu_operator', 'bondhu_scheduler'))
                 AND m.admin_option AND NOT r.rolsuper LOOP
        EXECUTE format('REVOKE ADMIN OPTION FOR %s FROM %s GRANTED BY %s', admin.role_name, admin.member, admin.grantor);
    END LOOP;

    -- Nothing for anybody first.
    FOREACH grantee IN ARRAY nobody LOOP
        EXECUTE format('REVOKE ALL ON ALL ROUTINES IN SCHEMA bondhu FROM %s', grantee);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA bondhu FROM %s', grantee);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA bondhu FROM %s', grantee);
        EXECUTE format('REVOKE ALL ON SCHEMA bondhu FROM %s', grantee);
        EXECUTE format('REVOKE ALL ON %s, public.system_tasks FROM %s', tables, grantee);
        EXECUTE format('REVOKE ALL ON SEQUENCE public.personality_profile_history_id_seq FROM %s', grantee);
        FOR api IN SELECT * FROM bondhu.public_api() LOOP
            EXECUTE format('REVOKE ALL ON %s %s FROM %s', api.kind, api.signature, grantee);
        END LOOP;
    END LOOP;

    -- Then what each may do.
    FOR api IN SELECT * FROM bondhu.public_api() LOOP
        privilege := CASE api.kind WHEN 'TABLE' THEN 'SELECT' ELSE 'EXECUTE' END;
        EXECUTE format('GRANT %s ON %s %s TO %s', privilege, api.kind, api.signature, array_to_string(operators, ', '));
        IF api.callers = 'scheduler' THEN
            EXECUTE format('GRANT %s ON %s %s TO bondhu_scheduler', privilege, api.kind, api.signature);
        ELSIF api.callers = 'authenticated' AND 'authenticated' = ANY (nobody) THEN
            EXECUTE format('GRANT %s ON %s %s TO authenticated', privilege, api.kind, api.signature);
        ELSIF api.callers = 'everyone' THEN
            EXECUTE format('GRANT %s ON %s %s TO PUBLIC', privilege, api.kind, api.signature);
        END IF;
    END LOOP;
    FOREACH grantee IN ARRAY operators || 'bondhu_scheduler'::text LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA bondhu TO %s', grantee);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', run_steps, grantee);
        EXECUTE format('GRANT EXECUTE ON PROCEDURE %s TO %s', run_procedures, grantee);
        EXECUTE format('GRANT SELECT ON bondhu.settings TO %s', grantee);
    END LOOP;
    FOREACH grantee IN ARRAY operators LOOP
        -- history ids are bondhu's to assign (Supabase's default privileges give them away)
        EXECUTE format('REVOKE ALL ON SEQUENCE public.personality_profile_history_id_seq FROM %s', grantee);
        EXECUTE format('GRANT UPDATE ON bondhu.settings TO %s', grantee);
        EXECUTE format('GRANT SELECT ON public.system_tasks, bondhu.pipeline_state, bondhu.task_runs TO %s', grantee);
        EXECUTE format('GRANT EXECUTE ON FUNCTION bondhu.run_is_alive(integer, timestamptz, timestamptz) TO %s', grantee);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s', tables, grantee);
    END LOOP;
    IF 'authenticated' = ANY (nobody) THEN
        EXECUTE format('GRANT SELECT ON %s TO authenticated', tables);
    END IF;

    -- A trigger on a table bondhu writes runs with the rights of bondhu's functions (a
    -- superuser's): only the table's owner may create one. Supabase's default privileges
    -- give TRIGGER on every new table in public to its roles (service_role, postgres).
    -- A superuser revokes as the owner, whose grants are the root of every other one
    -- (CASCADE takes those granted on with the grant option).
    FOR held IN SELECT c.oid::regclass::text AS relation,
                       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
                FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) a
                WHERE (c.relnamespace = 'bondhu'::regnamespace
                       OR c.oid = ANY (('{' || tables || ', public.system_tasks}')::regclass[]))
                  AND a.privilege_type = 'TRIGGER' AND a.grantee <> c.relowner AND a.grantor = c.relowner LOOP
        EXECUTE format('REVOKE TRIGGER ON %s FROM %s CASCADE', held.relation, held.grantee);
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION bondhu.grant_privileges() FROM PUBLIC;

-- Row level security: a signed-in user sees their own rows; operators see all. Table
-- owners and BYPASSRLS roles (Supabase's service_role) are not subject to it.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['chat_personality_insights', 'entertainment_interactions',
                             'user_personality_profiles', 'personality_profile_history'] LOOP
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
        -- Policies stay with tables left behind by DROP EXTENSION.
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_policies WHERE schemaname = 'public' AND tablename = t
                       AND policyname = 'bondhu_own_rows') THEN
            EXECUTE format($p$CREATE POLICY bondhu_own_rows ON public.%I FOR SELECT
                USING (user_id = (SELECT nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub', '')::uuid))$p$, t);
        END IF;
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_policies WHERE schemaname = 'public' AND tablename = t
                       AND policyname = 'bondhu_operators') THEN
            EXECUTE format('CREATE POLICY bondhu_operators ON public.%I TO bondhu_operator USING (true) WITH CHECK (true)', t);
        END IF;
    END LOOP;
END $$;

SELECT bondhu.grant_privileges();
