-- bondhu: what CREATE EXTENSION does last, and what a reinstall keeps.
--
-- DROP EXTENSION keeps the application's tables (drop_extension.sql) and, in the table
-- public.bondhu_kept_state, what operators set and what ran: the settings, the job
-- schedules and the run log. CREATE EXTENSION brings them back, and drops that table.

-- Called by DROP EXTENSION (prepare_drop): keeps the settings, the schedules and the
-- run log in public.bondhu_kept_state, readable by superusers only.
CREATE FUNCTION bondhu.keep_state() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
    grantee text;
BEGIN
    -- whatever has the name goes, with what depends on it: another role's view of that
    -- name would otherwise block DROP EXTENSION
    IF to_regclass('public.bondhu_kept_state') IS NOT NULL THEN
        EXECUTE format('DROP %s public.bondhu_kept_state CASCADE',
                       CASE (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = 'public.bondhu_kept_state'::regclass)
                            WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                            WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END);
    END IF;
    CREATE TABLE public.bondhu_kept_state AS
    SELECT (SELECT to_jsonb(s) FROM bondhu.settings s) AS settings,
           (SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]') FROM bondhu.schedules s) AS schedules,
           (SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]') FROM bondhu.task_runs t) AS runs;
    -- nobody's but superusers': default privileges (Supabase's give anon and
    -- authenticated everything new in public) are taken back
    FOR grantee IN SELECT DISTINCT a.grantee::regrole::text
                   FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
                   WHERE c.oid = 'public.bondhu_kept_state'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0 LOOP
        EXECUTE format('REVOKE ALL ON public.bondhu_kept_state FROM %s', grantee);
    END LOOP;
    REVOKE ALL ON public.bondhu_kept_state FROM PUBLIC;
    COMMENT ON TABLE public.bondhu_kept_state IS
        'bondhu''s settings, job schedules and run log, kept by DROP EXTENSION bondhu for the next CREATE EXTENSION bondhu.';
END $$;

-- What a DROP EXTENSION kept, if a superuser owns it (anyone else's table of that name
-- is not read: it could forge settings or runs). Runs that were running are not. No
-- cleanup can run before the extension exists: the check of a longer window against
-- cleanups under way is off meanwhile (it refuses at any isolation level but READ
-- COMMITTED, which a server's default_transaction_isolation may set).
ALTER TABLE bondhu.settings DISABLE TRIGGER refuse_window_past_cleanup;
DO $$
DECLARE
    kept record;
    runs bigint;
BEGIN
    IF to_regclass('public.bondhu_kept_state') IS NULL THEN
        RETURN;
    END IF;
    SELECT k.* INTO kept FROM public.bondhu_kept_state k
    WHERE (SELECT r.rolsuper FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
           WHERE c.oid = 'public.bondhu_kept_state'::regclass AND c.relkind = 'r')
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE bondhu.settings s SET
        dampening = k.dampening, insight_window = k.insight_window, active_user_window = k.active_user_window,
        insight_retention = k.insight_retention, run_log_retention = k.run_log_retention,
        self_update_min_interval = k.self_update_min_interval
    FROM jsonb_populate_record(NULL::bondhu.settings, kept.settings) k;
    INSERT INTO bondhu.schedules
    SELECT * FROM jsonb_populate_recordset(NULL::bondhu.schedules, kept.schedules);
    INSERT INTO bondhu.task_runs
    SELECT * FROM jsonb_populate_recordset(NULL::bondhu.task_runs, kept.runs) r WHERE r.status <> 'running'
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS runs = ROW_COUNT;
    -- with what another role built on it (a view would block the drop)
    DROP TABLE public.bondhu_kept_state CASCADE;
    -- CREATE EXTENSION raises client_min_messages to WARNING while its script runs
    PERFORM set_config('client_min_messages', 'notice', true);
    RAISE NOTICE 'bondhu: kept from before DROP EXTENSION: the settings, % job schedules, % runs of the run log',
        jsonb_array_length(kept.schedules), runs;
END $$;
ALTER TABLE bondhu.settings ENABLE ALWAYS TRIGGER refuse_window_past_cleanup;

-- The jobs, when pg_cron is there (with the schedules kept, if any, paused or not); a
-- NOTICE says what was scheduled, or why nothing was.
DO $$
DECLARE
    job jsonb;
BEGIN
    -- CREATE EXTENSION raises client_min_messages to WARNING while its script runs
    PERFORM set_config('client_min_messages', 'notice', true);
    IF NOT bondhu.cron_installed() THEN
        RAISE NOTICE 'bondhu: nothing scheduled: pg_cron is not installed in this database'
            USING HINT = 'After CREATE EXTENSION pg_cron, call bondhu_schedule().';
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM bondhu.schedules s WHERE s.paused_at IS NOT NULL) THEN
        RAISE NOTICE 'bondhu: nothing scheduled: the jobs were paused before DROP EXTENSION'
            USING HINT = 'SELECT bondhu_schedule() resumes them.';
        RETURN;
    END IF;
    FOR job IN SELECT * FROM jsonb_array_elements(public.bondhu_schedule() -> 'scheduled') LOOP
        RAISE NOTICE 'bondhu: scheduled % at ''%'' in %, as bondhu_scheduler',
            job ->> 'jobname', job ->> 'schedule', job ->> 'timezone';
    END LOOP;
END $$;
