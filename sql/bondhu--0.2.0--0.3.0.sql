-- bondhu 0.2.0 -> 0.3.0: exactly once and least privilege without exceptions.
-- A delta: only what changed (see CHANGELOG.md). scripts/test.sh checks that 0.2.0 plus
-- this script has the same catalog fingerprint as a fresh 0.3.0 install.
\echo Use "ALTER EXTENSION bondhu UPDATE TO '0.3.0'" to load this file. \quit

------------------------------------------------------------------------------------
-- Rust functions new in 0.3.0
------------------------------------------------------------------------------------

CREATE  FUNCTION bondhu."in_transaction_block"() RETURNS bool /* bool */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'in_transaction_block_wrapper';


        CREATE FUNCTION bondhu.on_drop_extension() RETURNS event_trigger
        LANGUAGE c AS 'MODULE_PATHNAME', 'on_drop_extension_wrapper';


CREATE FUNCTION bondhu."position_insight"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'position_insight_wrapper';


CREATE FUNCTION bondhu."guard_profile_cursor"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'guard_profile_cursor_wrapper';


------------------------------------------------------------------------------------
-- Cursors count the caller's own transaction as in progress (state.sql)
------------------------------------------------------------------------------------

-- The current snapshot as a cursor of positions. A snapshot never lists its own
-- transaction as in progress, so the cursor adds it: an update never counts insights
-- its own transaction writes, before or after it, as covered. They are applied by the
-- first update that starts after this transaction commits.
CREATE OR REPLACE FUNCTION bondhu.current_cursor() RETURNS bondhu.cursor
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ROW(q.base + least(q.xmin, q.own), q.base + q.xmax,
               ARRAY(SELECT q.base + x.x
                     FROM (SELECT x::text::bigint FROM pg_snapshot_xip(q.s) AS x
                           UNION
                           SELECT q.own WHERE q.own < q.xmax) AS x(x)
                     ORDER BY 1))::bondhu.cursor
    FROM (SELECT s, pg_snapshot_xmin(s)::text::bigint AS xmin, pg_snapshot_xmax(s)::text::bigint AS xmax,
                 pg_current_xact_id_if_assigned()::text::bigint AS own, base
          FROM pg_current_snapshot() AS s,
               (SELECT CAST(r.incarnation AS bigint) << 48 FROM bondhu.resolve_incarnation() AS r) AS b(base)) AS q
$$;


-- CREATE EXTENSION makes the row; pg_restore's COPY after it brings the dumped one,
-- which replaces it (the dumped system_identifier then starts a new incarnation).
CREATE FUNCTION bondhu.pipeline_state_keep_single_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM bondhu.pipeline_state) THEN
        UPDATE bondhu.pipeline_state SET
            incarnation = NEW.incarnation, system_identifier = NEW.system_identifier,
            applied_xmin = NEW.applied_xmin, applied_xmax = NEW.applied_xmax,
            applied_xip = NEW.applied_xip, advanced_at = NEW.advanced_at;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;


CREATE TRIGGER keep_single_row BEFORE INSERT ON bondhu.pipeline_state
    FOR EACH ROW EXECUTE FUNCTION bondhu.pipeline_state_keep_single_row();


------------------------------------------------------------------------------------
-- Positions assigned by a trigger, never by the writer; profile resets (data.sql)
------------------------------------------------------------------------------------
DROP TRIGGER IF EXISTS bondhu_position_added_insight ON public.entertainment_interactions;
DROP FUNCTION bondhu.position_added_insight();
DROP FUNCTION bondhu.attach_data_tables(boolean);

-- Deleting a profile resets the user to 50 (the next update creates the profile
-- again), and what it had applied stays applied: every insight of the user that the
-- deleted profile's cursor or the global cursor covers is marked applied for good
-- (position 2) before the profile goes, so that not even a global cursor that starts
-- again (DROP and CREATE EXTENSION) applies it again. TRUNCATE does the same for every
-- profile.
-- It marks them as replication's apply would write them (session_replication_role =
-- replica), so that the application's own triggers do not fire for bondhu's change,
-- and tells bondhu's position trigger that this position is bondhu's own
-- (bondhu.marking_applied; only a superuser's write honours it).
CREATE FUNCTION bondhu.forget_profiles() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET session_replication_role = replica SET bondhu.marking_applied = on AS $$
DECLARE
    g bondhu.cursor := bondhu.global_cursor();
BEGIN
    PERFORM bondhu.require_superuser_owned_tables();
    UPDATE public.chat_personality_insights c SET ingest_pos = 2
    FROM public.user_personality_profiles p
    WHERE p.user_id = c.user_id AND (TG_OP = 'TRUNCATE' OR p.user_id = OLD.user_id)
      AND c.ingest_pos > 2
      AND (bondhu.position_applied(c.ingest_pos, (g).xmin_pos, (g).xmax_pos, (g).xip_pos)
           OR bondhu.position_applied(c.ingest_pos, p.applied_xmin, p.applied_xmax, p.applied_xip));
    UPDATE public.entertainment_interactions e SET ingest_pos = 2
    FROM public.user_personality_profiles p
    WHERE p.user_id = e.user_id AND (TG_OP = 'TRUNCATE' OR p.user_id = OLD.user_id)
      AND e.ingest_pos > 2
      AND (bondhu.position_applied(e.ingest_pos, (g).xmin_pos, (g).xmax_pos, (g).xip_pos)
           OR bondhu.position_applied(e.ingest_pos, p.applied_xmin, p.applied_xmax, p.applied_xip));
    RETURN OLD;
END $$;


-- AFTER UPDATE on both insight tables, for a row whose document or user changed while
-- its position did not: an application's BEFORE trigger that sorts after bondhu's
-- (zz_bondhu_position_insight) changed it after bondhu looked. The row gets this
-- transaction's position, as bondhu's trigger would have given it.
CREATE FUNCTION bondhu.position_late_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.ingest_pos IS DISTINCT FROM bondhu.ingest_position() THEN
        EXECUTE format('UPDATE %s SET ingest_pos = bondhu.ingest_position() WHERE id = $1', TG_RELID::regclass)
        USING NEW.id;
    END IF;
    RETURN NULL;
END $$;


-- The triggers bondhu keeps on the tables while installed, as (table, trigger, definition).
CREATE FUNCTION bondhu.data_triggers() RETURNS TABLE (relation regclass, name text, definition text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES ('public.chat_personality_insights'::regclass, 'zz_bondhu_position_insight',
            'BEFORE INSERT OR UPDATE ON public.chat_personality_insights FOR EACH ROW '
            'EXECUTE FUNCTION bondhu.position_insight(''adjustments'')'),
           ('public.entertainment_interactions'::regclass, 'zz_bondhu_position_insight',
            'BEFORE INSERT OR UPDATE ON public.entertainment_interactions FOR EACH ROW '
            'EXECUTE FUNCTION bondhu.position_insight(''personality_insights'')'),
           ('public.chat_personality_insights'::regclass, 'zz_bondhu_position_late_change',
            'AFTER UPDATE ON public.chat_personality_insights FOR EACH ROW '
            'WHEN (OLD.ingest_pos IS NOT DISTINCT FROM NEW.ingest_pos AND (OLD.user_id IS DISTINCT FROM NEW.user_id '
            'OR OLD.adjustments IS DISTINCT FROM NEW.adjustments)) '
            'EXECUTE FUNCTION bondhu.position_late_change()'),
           ('public.entertainment_interactions'::regclass, 'zz_bondhu_position_late_change',
            'AFTER UPDATE ON public.entertainment_interactions FOR EACH ROW '
            'WHEN (OLD.ingest_pos IS NOT DISTINCT FROM NEW.ingest_pos AND (OLD.user_id IS DISTINCT FROM NEW.user_id '
            'OR OLD.personality_insights IS DISTINCT FROM NEW.personality_insights)) '
            'EXECUTE FUNCTION bondhu.position_late_change()'),
           ('public.user_personality_profiles'::regclass, 'zz_bondhu_guard_cursor',
            'BEFORE INSERT OR UPDATE ON public.user_personality_profiles FOR EACH ROW '
            'EXECUTE FUNCTION bondhu.guard_profile_cursor()'),
           ('public.user_personality_profiles'::regclass, 'bondhu_forget_profile',
            'BEFORE DELETE ON public.user_personality_profiles FOR EACH ROW '
            'EXECUTE FUNCTION bondhu.forget_profiles()'),
           ('public.user_personality_profiles'::regclass, 'bondhu_forget_profiles',
            'BEFORE TRUNCATE ON public.user_personality_profiles FOR EACH STATEMENT '
            'EXECUTE FUNCTION bondhu.forget_profiles()')
$$;


-- bondhu's SECURITY DEFINER functions write the four tables as the extension's owner (a
-- superuser). A table owned by any other role could carry that role's triggers, which
-- would then run with bondhu's privileges, or have bondhu's triggers disabled or
-- dropped. So bondhu works only on tables that superusers own: this refuses, with
-- 42501, to go on otherwise.
CREATE FUNCTION bondhu.require_superuser_owned_tables() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    untrusted record;
BEGIN
    SELECT t.relation, r.rolname INTO untrusted
    FROM bondhu.data_tables() t
    JOIN pg_catalog.pg_class c ON c.oid = t.relation
    JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
    WHERE t.kind = 'TABLE' AND NOT r.rolsuper
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bondhu: % is owned by %, which is not a superuser', untrusted.relation, untrusted.rolname
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'bondhu writes this table with its owner''s privileges; triggers of another owner would run with them.',
                  HINT = format('As a superuser: ALTER TABLE %s OWNER TO %I; then grant the application''s role what it needs '
                                '(GRANT bondhu_operator TO %I, for one).', untrusted.relation, current_user, untrusted.rolname);
    END IF;
END $$;


-- Brings the tables to what bondhu needs and makes them members of the extension,
-- keeping every row. Idempotent. Called by the extension's scripts (CREATE EXTENSION,
-- ALTER EXTENSION UPDATE), which alone may register configuration tables.
CREATE FUNCTION bondhu.attach_data_tables() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
    insight record;
    trait text;
    member record;
BEGIN
    FOR insight IN SELECT * FROM (VALUES
            ('public.chat_personality_insights'::regclass, 'chat_personality_insights', '"timestamp"'),
            ('public.entertainment_interactions'::regclass, 'entertainment_interactions', 'created_at')) AS v(t, name, observed)
    LOOP
        IF insight.name = 'entertainment_interactions' THEN
            ALTER TABLE public.entertainment_interactions ADD COLUMN IF NOT EXISTS personality_insights jsonb;
        END IF;
        EXECUTE format('DROP TRIGGER IF EXISTS bondhu_uninstalled_insight ON %s', insight.t);
        IF EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = insight.t AND attname = 'ingest_pos' AND NOT attisdropped) THEN
            EXECUTE format('UPDATE %s SET ingest_pos = bondhu.ingest_position() WHERE ingest_pos IS NULL', insight.t);
        ELSE
            EXECUTE format('ALTER TABLE %s ADD COLUMN ingest_pos bigint DEFAULT 2', insight.t);
        END IF;
        EXECUTE format('ALTER TABLE %s ALTER COLUMN ingest_pos DROP DEFAULT, '
                       'ALTER COLUMN ingest_pos SET NOT NULL', insight.t);
        EXECUTE format('COMMENT ON COLUMN %s.ingest_pos IS %L', insight.t,
                       'Managed by bondhu: which transaction wrote the insight. Assigned by bondhu; a written value is refused.');
        IF to_regclass('public.' || insight.name || '_user_pos') IS NULL THEN
            EXECUTE format('CREATE INDEX %I ON %s (user_id, ingest_pos)', insight.name || '_user_pos', insight.t);
        END IF;
        IF to_regclass('public.' || insight.name || '_pos_brin') IS NULL THEN
            EXECUTE format('CREATE INDEX %I ON %s USING brin (ingest_pos)', insight.name || '_pos_brin', insight.t);
        END IF;
        IF to_regclass('public.' || insight.name || '_observed_brin') IS NULL THEN
            EXECUTE format('CREATE INDEX %I ON %s USING brin (%s)', insight.name || '_observed_brin', insight.t, insight.observed);
        END IF;
    END LOOP;
    -- Profiles: traits as double precision 0..100 starting at 50, and the cursor.
    FOREACH trait IN ARRAY ARRAY['openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism'] LOOP
        IF (SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
            WHERE attrelid = 'public.user_personality_profiles'::regclass AND attname = trait) <> 'double precision' THEN
            EXECUTE format('ALTER TABLE public.user_personality_profiles ALTER COLUMN %I TYPE double precision', trait);
        END IF;
        EXECUTE format('ALTER TABLE public.user_personality_profiles ALTER COLUMN %I SET DEFAULT 50', trait);
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conname = trait || '_0_to_100'
                       AND conrelid = 'public.user_personality_profiles'::regclass) THEN
            -- NOT VALID: adopted rows are kept as they are; every new value is checked.
            EXECUTE format('ALTER TABLE public.user_personality_profiles ADD CONSTRAINT %I CHECK (%I BETWEEN 0 AND 100) NOT VALID',
                           trait || '_0_to_100', trait);
        END IF;
    END LOOP;
    ALTER TABLE public.user_personality_profiles
        ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
        ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now(),
        ADD COLUMN IF NOT EXISTS applied_xmin bigint,
        ADD COLUMN IF NOT EXISTS applied_xmax bigint,
        ADD COLUMN IF NOT EXISTS applied_xip bigint[];
    COMMENT ON COLUMN public.user_personality_profiles.applied_xmin IS
        'Managed by bondhu (with applied_xmax, applied_xip): the cursor that last updated this profile.';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_index i
                   WHERE i.indrelid = 'public.user_personality_profiles'::regclass AND i.indisunique
                     AND i.indnkeyatts = 1 AND i.indpred IS NULL
                     AND i.indkey[0] = (SELECT attnum FROM pg_catalog.pg_attribute
                                        WHERE attrelid = 'public.user_personality_profiles'::regclass
                                          AND attname = 'user_id')) THEN
        CREATE UNIQUE INDEX user_personality_profiles_user_id_key ON public.user_personality_profiles (user_id);
    END IF;

    DROP TRIGGER IF EXISTS bondhu_uninstalled_profile ON public.user_personality_profiles;
    DROP FUNCTION IF EXISTS public.bondhu_uninstalled_insight();
    DROP FUNCTION IF EXISTS public.bondhu_uninstalled_profile();
    FOR member IN SELECT * FROM bondhu.data_triggers() LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger
                       WHERE tgrelid = member.relation AND tgname = member.name AND NOT tgisinternal) THEN
            EXECUTE format('CREATE TRIGGER %I %s', member.name, member.definition);
        END IF;
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', member.relation, member.name);
    END LOOP;

    FOR member IN SELECT * FROM bondhu.data_tables() LOOP
        IF NOT bondhu.is_member(member.relation) THEN
            EXECUTE format('ALTER EXTENSION bondhu ADD %s %s', member.kind, member.relation);
        END IF;
        PERFORM pg_catalog.pg_extension_config_dump(member.relation, '');
    END LOOP;
END $$;


-- Leaves the tables standing on their own: no longer members, and nothing in them that
-- depends on the extension (bondhu's triggers). Two small triggers stand in while
-- bondhu is not installed: what is written or changed then is pending (no position),
-- and neither a position nor a profile's cursor can be written; attach_data_tables
-- drops them again.
CREATE OR REPLACE FUNCTION bondhu.detach_data_tables() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $detach$
DECLARE
    member record;
BEGIN
    FOR member IN SELECT * FROM bondhu.data_triggers() LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', member.name, member.relation);
    END LOOP;
    ALTER TABLE public.chat_personality_insights ALTER COLUMN ingest_pos DROP NOT NULL;
    ALTER TABLE public.entertainment_interactions ALTER COLUMN ingest_pos DROP NOT NULL;
    -- Not members (created outside CREATE EXTENSION), so they survive DROP EXTENSION.
    CREATE FUNCTION public.bondhu_uninstalled_insight() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
    BEGIN
        -- TG_ARGV[0]: the document column
        IF TG_OP = 'INSERT'
           OR NEW.user_id IS DISTINCT FROM OLD.user_id
           OR to_jsonb(NEW) -> TG_ARGV[0] IS DISTINCT FROM to_jsonb(OLD) -> TG_ARGV[0] THEN
            NEW.ingest_pos := NULL;
        ELSE
            NEW.ingest_pos := OLD.ingest_pos;
        END IF;
        RETURN NEW;
    END $$;
    REVOKE ALL ON FUNCTION public.bondhu_uninstalled_insight() FROM PUBLIC;
    CREATE FUNCTION public.bondhu_uninstalled_profile() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            NEW.applied_xmin := NULL; NEW.applied_xmax := NULL; NEW.applied_xip := NULL;
        ELSE
            NEW.applied_xmin := OLD.applied_xmin; NEW.applied_xmax := OLD.applied_xmax;
            NEW.applied_xip := OLD.applied_xip;
        END IF;
        RETURN NEW;
    END $$;
    REVOKE ALL ON FUNCTION public.bondhu_uninstalled_profile() FROM PUBLIC;
    -- and from the roles Supabase's default privileges give new functions in public to
    FOR member IN SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.rolname IN ('anon', 'authenticated', 'service_role') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION public.bondhu_uninstalled_insight(), public.bondhu_uninstalled_profile() FROM %I',
                       member.rolname);
    END LOOP;
    CREATE TRIGGER bondhu_uninstalled_insight BEFORE INSERT OR UPDATE ON public.chat_personality_insights
        FOR EACH ROW EXECUTE FUNCTION public.bondhu_uninstalled_insight('adjustments');
    CREATE TRIGGER bondhu_uninstalled_insight BEFORE INSERT OR UPDATE ON public.entertainment_interactions
        FOR EACH ROW EXECUTE FUNCTION public.bondhu_uninstalled_insight('personality_insights');
    CREATE TRIGGER bondhu_uninstalled_profile BEFORE INSERT OR UPDATE ON public.user_personality_profiles
        FOR EACH ROW EXECUTE FUNCTION public.bondhu_uninstalled_profile();
    ALTER TABLE public.chat_personality_insights ENABLE ALWAYS TRIGGER bondhu_uninstalled_insight;
    ALTER TABLE public.entertainment_interactions ENABLE ALWAYS TRIGGER bondhu_uninstalled_insight;
    ALTER TABLE public.user_personality_profiles ENABLE ALWAYS TRIGGER bondhu_uninstalled_profile;
    FOR member IN SELECT * FROM bondhu.data_tables() LOOP
        IF bondhu.is_member(member.relation) THEN
            EXECUTE format('ALTER EXTENSION bondhu DROP %s %s', member.kind, member.relation);
        END IF;
    END LOOP;
END $detach$;


------------------------------------------------------------------------------------
-- The run lock per transaction, runs' liveness from their backend (pipeline.sql)
------------------------------------------------------------------------------------
DROP FUNCTION bondhu.start_update_run(boolean);
DROP FUNCTION bondhu.apply_update_batch(uuid, bondhu.cursor, bondhu.cursor, uuid, integer);
DROP FUNCTION bondhu.finish_update_run(uuid, bondhu.cursor, boolean);
DROP FUNCTION bondhu.start_cleanup_run(interval, boolean);
DROP FUNCTION bondhu.cleanup_slice(uuid, timestamptz, timestamptz);
DROP FUNCTION bondhu.finish_cleanup_run(uuid, boolean);

-- bondhu: the run log and the update pipeline (how positions and cursors work: state.sql).

------------------------------------------------------------------------------------
-- Run log
------------------------------------------------------------------------------------
-- When this backend started: with its pid, it names the session for good (pids are
-- reused).
CREATE FUNCTION bondhu.backend_start() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_backend_pid()
$$;


ALTER TABLE bondhu.task_runs
    ADD COLUMN backend_pid integer DEFAULT pg_backend_pid(),
    ADD COLUMN backend_start timestamptz DEFAULT bondhu.backend_start(),
    ADD COLUMN covered bondhu.cursor,
    ADD COLUMN snapshot bondhu.cursor,
    ADD COLUMN resume_after uuid,
    ADD COLUMN cutoff timestamptz,
    ADD COLUMN resume_from timestamptz,
    ADD COLUMN all_done boolean NOT NULL DEFAULT false;
-- runs logged by 0.2.0 keep NULL: none of them is alive after the upgrade
UPDATE bondhu.task_runs SET backend_pid = NULL, backend_start = NULL;

-- Is a run's session still running it? The run is alive while the statement that
-- started it (the CALL) is still active in the same backend. SECURITY DEFINER: a caller
-- without pg_read_all_stats sees no state of other roles' backends (the scheduler's).
CREATE FUNCTION bondhu.run_is_alive(backend_pid integer, backend_start timestamptz, executed_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
                   WHERE a.pid = backend_pid AND a.backend_start = run_is_alive.backend_start
                     AND a.state = 'active' AND a.query_start <= executed_at)
$$;


-- A run left 'running' by a session that moved on (an error, a cancel, a kill) shows
-- as failed at once, before anything marks it so.
CREATE OR REPLACE VIEW public.system_tasks AS
    SELECT t.id, t.task_name, t.executed_at,
           CASE WHEN r.interrupted THEN 'failed' ELSE t.status END AS status,
           t.users_processed, t.successful_updates, t.failed_updates, t.records_processed,
           CASE WHEN r.interrupted THEN 'interrupted: the session running it ended the run before it finished'
                ELSE t.error_message END AS error_message,
           t.metadata, t.duration_seconds
    FROM bondhu.task_runs t
    CROSS JOIN LATERAL (SELECT t.status = 'running'
                               AND NOT bondhu.run_is_alive(t.backend_pid, t.backend_start, t.executed_at)
                               AS interrupted) r;


------------------------------------------------------------------------------------
-- Insight documents and trait math
------------------------------------------------------------------------------------
-- Every insight, from both sources, as one relation. An interaction whose
-- personality_insights is SQL NULL or JSON null is not analysed yet: not an insight.
CREATE OR REPLACE VIEW bondhu.insights AS
    SELECT c.user_id, 'chat'::text AS source, c.adjustments AS doc,
           coalesce(c."timestamp", c.created_at) AS observed_at, c.ingest_pos
    FROM public.chat_personality_insights c
    UNION ALL
    SELECT e.user_id, 'entertainment'::text, e.personality_insights,
           e.created_at, e.ingest_pos
    FROM public.entertainment_interactions e
    WHERE e.personality_insights IS NOT NULL AND e.personality_insights <> 'null'::jsonb;


-- The first user after `after` (NULL: from the start) in key order with an insight
-- pending between the two cursors: one step along each table's <table>_user_pos index.
-- It reads the tables, not bondhu.insights: a UNION ALL branch with a WHERE clause (the
-- entertainment one) cannot be read in index order through the view.
CREATE OR REPLACE FUNCTION bondhu.next_pending_user(after uuid, covered bondhu.cursor, snapshot bondhu.cursor)
RETURNS uuid LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- the nil uuid is the least one: from it, every user comes after
    SELECT least(
        (SELECT c.user_id FROM public.chat_personality_insights c
         WHERE c.user_id >= coalesce(after, '00000000-0000-0000-0000-000000000000')
           AND (after IS NULL OR c.user_id <> after)
           AND bondhu.position_pending(c.ingest_pos, covered, snapshot)
         ORDER BY c.user_id LIMIT 1),
        (SELECT e.user_id FROM public.entertainment_interactions e
         WHERE e.user_id >= coalesce(after, '00000000-0000-0000-0000-000000000000')
           AND (after IS NULL OR e.user_id <> after)
           AND e.personality_insights IS NOT NULL AND e.personality_insights <> 'null'::jsonb
           AND bondhu.position_pending(e.ingest_pos, covered, snapshot)
         ORDER BY e.user_id LIMIT 1))
$$;


-- A personality update run, in three steps that bondhu_update_all() takes in one
-- transaction and bondhu_run_update_all() in many (one per batch of users):
-- The run lock is a transaction-level advisory lock, so that no error, cancel or
-- transaction block can leave it held: a single-transaction run holds it throughout; a
-- procedure's run takes it again in every transaction it commits, and between them its
-- 'running' row, alive while its CALL is (run_is_alive), keeps other runs out. A run
-- whose session moved on is marked failed ('interrupted') by the next run or health
-- check. The three steps are SECURITY DEFINER so that operators and the scheduler role
-- can run the procedure, which cannot be (it commits); so they take nothing from their
-- caller but a run id, and act only on a run of the caller's own session: its cursors
-- and progress are in its row, and the global cursor moves only when every user was
-- done.

-- Marks a task's runs left 'running' by a session that moved on.
CREATE OR REPLACE FUNCTION bondhu.mark_interrupted_runs(task text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE bondhu.task_runs t
    SET status = 'failed', finished_at = clock_timestamp(),
        error_message = 'interrupted: the session running it ended the run before it finished'
    WHERE t.status = 'running' AND t.task_name = task
      AND NOT bondhu.run_is_alive(t.backend_pid, t.backend_start, t.executed_at)
$$;


-- Takes the task's run lock for this transaction, unless another run of the task is
-- alive: then logs a 'skipped' run and returns it.
CREATE FUNCTION bondhu.lock_run(task text, OUT skipped bondhu.task_runs)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A live run between two of its transactions holds no lock: its row says it. The
    -- row is checked again, in a statement of its own (a new snapshot, fresh activity
    -- statistics), once the lock is held: a run that committed its row meanwhile shows.
    IF NOT bondhu.live_run_exists(task) AND pg_try_advisory_xact_lock(bondhu.lock_key(task)) THEN
        PERFORM pg_stat_clear_snapshot();
        IF NOT bondhu.live_run_exists(task) THEN
            PERFORM bondhu.mark_interrupted_runs(task);
            RETURN;
        END IF;
    END IF;
    INSERT INTO bondhu.task_runs (task_name, status, finished_at, duration_seconds, error_message)
    VALUES (task, 'skipped', clock_timestamp(), 0,
            CASE task WHEN 'personality_update' THEN 'another personality update was running'
                      ELSE 'another cleanup was running' END)
    RETURNING * INTO skipped;
END $$;


CREATE FUNCTION bondhu.live_run_exists(task text) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM bondhu.task_runs t
                   WHERE t.task_name = task AND t.status = 'running'
                     AND bondhu.run_is_alive(t.backend_pid, t.backend_start, t.executed_at))
$$;


-- The run `run_id` of `task`, if it is running in this session; otherwise 55000. A
-- step given another session's run, a finished one, or a made-up id does nothing.
CREATE FUNCTION bondhu.own_run(run_id uuid, task text) RETURNS bondhu.task_runs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs;
BEGIN
    SELECT * INTO run FROM bondhu.task_runs t
    WHERE t.id = run_id AND t.task_name = task AND t.status IN ('running', 'failed')
      AND t.finished_at IS NULL
      AND t.backend_pid = pg_backend_pid() AND t.backend_start = bondhu.backend_start();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'bondhu: % is not a % run of this session', run_id, task
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN run;
END $$;


-- Starts an update run (or logs a skipped one): its snapshot is what it applies.
CREATE FUNCTION bondhu.start_update_run() RETURNS bondhu.task_runs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs;
    snapshot bondhu.cursor;
BEGIN
    PERFORM bondhu.require_superuser_owned_tables();
    run := bondhu.lock_run('personality_update');
    IF run.id IS NULL THEN
        -- the snapshot first: it resolves the incarnation, which may start the state
        snapshot := bondhu.current_cursor();
        INSERT INTO bondhu.task_runs (task_name, status, covered, snapshot)
        VALUES ('personality_update', 'running', bondhu.global_cursor(), snapshot)
        RETURNING * INTO run;
    END IF;
    RETURN run;
END $$;


-- Applies the pending insights of the run's next batch_size users in key order (all of
-- them when batch_size is NULL); adds the counts to the run's row. Returns whether users
-- may be left. If the batch's set-based statement fails, its users are redone one by
-- one: a failing user is counted and keeps their insights pending. If the batch fails
-- as a whole, its work is rolled back, the run is marked failed, and false is returned.
CREATE FUNCTION bondhu.apply_update_batch(run_id uuid, batch_size integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET plan_cache_mode = force_custom_plan
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs;
    covered bondhu.cursor;
    snapshot bondhu.cursor;
    after_user uuid;
    batch uuid[];
    one_user uuid;
    totals record;
    one record;
    failed uuid[] := '{}';
    first_error text;
    error_state text;
BEGIN
    -- the run lock, again in each transaction of a procedure's run (held already in a
    -- single-transaction run)
    PERFORM pg_advisory_xact_lock(bondhu.lock_key('personality_update'));
    run := bondhu.own_run(run_id, 'personality_update');
    IF run.status <> 'running' THEN
        RETURN false;
    END IF;
    covered := run.covered;
    snapshot := run.snapshot;
    after_user := run.resume_after;
    -- The next users with insights pending in this run, in key order.
    IF batch_size IS NULL THEN
        -- all of them: one pass over the pending insights
        batch := ARRAY(
            SELECT DISTINCT i.user_id
            FROM bondhu.insights i
            WHERE (after_user IS NULL OR i.user_id > after_user)
              AND bondhu.position_pending(i.ingest_pos, covered, snapshot)
            ORDER BY i.user_id);
    ELSE
        -- batch_size of them: one step along the <table>_user_pos indexes per user (a
        -- skip scan), so that a batch reads only its own users' insights
        batch := ARRAY(
            WITH RECURSIVE next_user(user_id, n) AS (
                SELECT bondhu.next_pending_user(after_user, covered, snapshot), 1
                UNION ALL
                SELECT bondhu.next_pending_user(u.user_id, covered, snapshot), u.n + 1
                FROM next_user u
                WHERE u.user_id IS NOT NULL AND u.n < batch_size
            )
            SELECT u.user_id FROM next_user u WHERE u.user_id IS NOT NULL ORDER BY u.n);
    END IF;
    IF cardinality(batch) = 0 THEN
        UPDATE bondhu.task_runs t SET all_done = true WHERE t.id = run_id;
        RETURN false;
    END IF;
    BEGIN
        INSERT INTO public.user_personality_profiles (user_id)
        SELECT unnest(batch) ON CONFLICT (user_id) DO NOTHING;
        -- Lock in key order (no deadlock with another locker of several profiles); a
        -- self-service update holding one of them is waited for, then seen.
        PERFORM FROM public.user_personality_profiles p
        WHERE p.user_id = ANY (batch) ORDER BY p.user_id FOR UPDATE OF p;
        BEGIN
            SELECT count(*)::integer AS users, coalesce(sum(a.insights_processed), 0)::bigint AS applied,
                   coalesce(sum(a.rejected_insights), 0)::bigint AS rejected,
                   coalesce(sum(a.stale_insights), 0)::bigint AS stale, coalesce(sum(a.ignored_keys), 0)::bigint AS ignored
            INTO totals
            FROM bondhu.apply_pending(batch[1], batch[cardinality(batch)], covered, snapshot, run_id, 'update_all') a;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS first_error = MESSAGE_TEXT;
            SELECT 0 AS users, 0::bigint AS applied, 0::bigint AS rejected, 0::bigint AS stale, 0::bigint AS ignored
            INTO totals;
            FOREACH one_user IN ARRAY batch LOOP
                BEGIN
                    SELECT count(*)::integer AS users, coalesce(sum(a.insights_processed), 0)::bigint AS applied,
                           coalesce(sum(a.rejected_insights), 0)::bigint AS rejected,
                           coalesce(sum(a.stale_insights), 0)::bigint AS stale, coalesce(sum(a.ignored_keys), 0)::bigint AS ignored
                    INTO one
                    FROM bondhu.apply_pending(one_user, one_user, covered, snapshot, run_id, 'update_all') a;
                    totals.users := totals.users + one.users;
                    totals.applied := totals.applied + one.applied;
                    totals.rejected := totals.rejected + one.rejected;
                    totals.stale := totals.stale + one.stale;
                    totals.ignored := totals.ignored + one.ignored;
                EXCEPTION WHEN OTHERS THEN
                    totals.users := totals.users + 1;
                    failed := failed || one_user;
                END;
            END LOOP;
        END;
        UPDATE bondhu.task_runs t SET
            users_processed = t.users_processed + totals.users,
            successful_updates = t.successful_updates + totals.users - cardinality(failed),
            failed_updates = t.failed_updates + cardinality(failed),
            records_processed = t.records_processed + totals.applied,
            error_message = coalesce(t.error_message, first_error),
            metadata = jsonb_build_object(
                'insights_processed', coalesce((t.metadata ->> 'insights_processed')::bigint, 0) + totals.applied,
                'rejected_insights', coalesce((t.metadata ->> 'rejected_insights')::bigint, 0) + totals.rejected,
                'stale_insights', coalesce((t.metadata ->> 'stale_insights')::bigint, 0) + totals.stale,
                'ignored_keys', coalesce((t.metadata ->> 'ignored_keys')::bigint, 0) + totals.ignored,
                'failed_user_ids', coalesce(t.metadata -> 'failed_user_ids', '[]') || to_jsonb(failed)),
            resume_after = batch[cardinality(batch)],
            all_done = batch_size IS NULL
        WHERE t.id = run_id;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        -- The batch's own work is rolled back; the failure is logged. A cancel (or
        -- statement_timeout) of a procedure's run ends the run here, logged; a
        -- single-transaction run is cancelled whole.
        IF batch_size IS NULL AND SQLSTATE = '57014' THEN
            RAISE;
        END IF;
        GET STACKED DIAGNOSTICS first_error = MESSAGE_TEXT, error_state = RETURNED_SQLSTATE;
        UPDATE bondhu.task_runs t SET status = 'failed', error_message = first_error,
            metadata = t.metadata || jsonb_build_object('sqlstate', error_state)
        WHERE t.id = run_id;
        RETURN false;
    END;
    RETURN batch_size IS NOT NULL;
END $$;


-- Closes the run: when every user was done and none failed, every insight the run's
-- snapshot covers is applied, and the global cursor moves to it; otherwise it stays,
-- and the next run retries exactly what is pending.
CREATE FUNCTION bondhu.finish_update_run(run_id uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs := bondhu.own_run(run_id, 'personality_update');
BEGIN
    UPDATE bondhu.task_runs t SET
        status = CASE WHEN t.status = 'failed' OR NOT t.all_done THEN 'failed'
                      WHEN t.failed_updates > 0 THEN 'completed_with_errors' ELSE 'completed' END,
        error_message = CASE WHEN t.status <> 'failed' AND NOT t.all_done
                             THEN 'finished before every user was done' ELSE t.error_message END,
        finished_at = clock_timestamp(),
        duration_seconds = round(extract(epoch FROM clock_timestamp() - t.executed_at)::numeric, 3)
    WHERE t.id = run_id
    RETURNING * INTO run;
    IF run.status = 'completed' THEN
        UPDATE bondhu.pipeline_state SET
            applied_xmin = (run.snapshot).xmin_pos, applied_xmax = (run.snapshot).xmax_pos,
            applied_xip = (run.snapshot).xip_pos, advanced_at = now();
    END IF;
    RETURN bondhu.run_summary(run);
END $$;


-- Updates every user with pending insights, in one transaction. Never overlaps another
-- run: a call while one runs returns status 'skipped'. Each call leaves one row in
-- system_tasks.
CREATE OR REPLACE FUNCTION public.bondhu_update_all() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs := bondhu.start_update_run();
BEGIN
    IF run.status = 'skipped' THEN
        RETURN bondhu.run_summary(run);
    END IF;
    PERFORM bondhu.apply_update_batch(run.id, NULL);
    RETURN bondhu.finish_update_run(run.id);
END $$;


------------------------------------------------------------------------------------
-- Public API
------------------------------------------------------------------------------------
-- The self-service update of bondhu_update_personality (below).
CREATE FUNCTION bondhu.update_personality(target uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    operator boolean;
    snapshot bondhu.cursor;
    profile public.user_personality_profiles;
    applied record;
    traits double precision[];
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'bondhu_update_personality: user_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    PERFORM bondhu.require_superuser_owned_tables();
    operator := bondhu.caller_is_operator();
    IF NOT operator THEN
        PERFORM bondhu.require_own_profile(target);
    END IF;

    INSERT INTO public.user_personality_profiles AS p (user_id) VALUES (target)
    ON CONFLICT (user_id) DO NOTHING;
    SELECT * INTO STRICT profile FROM public.user_personality_profiles p WHERE p.user_id = target FOR UPDATE;
    IF NOT operator THEN
        PERFORM bondhu.admit_self_update(target);
    END IF;

    -- Taken after the lock: covers whatever the previous holder of the lock applied.
    snapshot := bondhu.current_cursor();
    SELECT * INTO applied
    FROM bondhu.apply_pending(target, target, bondhu.global_cursor(), snapshot, NULL, 'self_update');
    traits := ARRAY[coalesce(profile.openness, 50), coalesce(profile.conscientiousness, 50),
                    coalesce(profile.extraversion, 50), coalesce(profile.agreeableness, 50),
                    coalesce(profile.neuroticism, 50)];
    RETURN jsonb_build_object(
        'user_id', target,
        'insights_processed', coalesce(applied.insights_processed, 0),
        'chat_insights', coalesce(applied.chat_insights, 0),
        'entertainment_insights', coalesce(applied.entertainment_insights, 0),
        'rejected_insights', coalesce(applied.rejected_insights, 0),
        'stale_insights', coalesce(applied.stale_insights, 0),
        'ignored_keys', coalesce(applied.ignored_keys, 0),
        'trait_changes', bondhu.trait_changes(traits, coalesce(applied.traits_after, traits)),
        'updated_at', CASE WHEN applied.insights_processed > 0 THEN now() ELSE profile.updated_at END);
END $$;


-- Errors reach the server log: the caller gets each error's SQLSTATE, message and hint,
-- and its detail only from bondhu's own refusals; Postgres's details and contexts can
-- quote a row (a user id, trait values) or the JWT.
CREATE OR REPLACE FUNCTION public.bondhu_update_personality(user_id uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    state text;
    message text;
    detail text;
    hint text;
BEGIN
    RETURN bondhu.update_personality(user_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    IF state IN ('PT429', '42501', '22004') AND detail <> '' THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint;
    ELSIF hint <> '' THEN
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, HINT = hint;
    ELSE
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message;
    END IF;
END $$;


-- The same, committing after every batch of users: for pg_cron and large databases. A
-- self-service update waits for one batch at most, memory stays bounded, and the run's
-- progress shows in system_tasks while it runs.
CREATE OR REPLACE PROCEDURE public.bondhu_run_update_all(batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
DECLARE
    run bondhu.task_runs;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'bondhu_run_update_all: batch_size must be a positive number of users'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM bondhu.refuse_transaction_block('bondhu_run_update_all', 'SELECT bondhu_update_all()');
    run := bondhu.start_update_run();
    IF run.status = 'skipped' THEN
        RETURN;
    END IF;
    COMMIT;
    WHILE bondhu.apply_update_batch(run.id, batch_size) LOOP
        COMMIT;
    END LOOP;
    COMMIT;
    PERFORM bondhu.finish_update_run(run.id);
    COMMIT;
END $$;


-- A cleanup run, in three steps that bondhu_cleanup_insights() takes in one transaction
-- and bondhu_run_cleanup() in many (one per slice of time), like an update run:
-- Deletes chat insights older than the cutoff; on entertainment interactions it clears
-- the insight (the interaction belongs to the entertainment feature). Refuses, changing
-- nothing, any older_than that could delete insights not applied yet.
CREATE FUNCTION bondhu.start_cleanup_run(older_than interval) RETURNS bondhu.task_runs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    window_length interval := (SELECT s.insight_window FROM bondhu.settings s);
    cutoff timestamptz := now() - older_than;
    run bondhu.task_runs;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF cutoff >= now() THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than must be a positive interval, got %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    -- compared as moments, not intervals: '30 days' is shorter than '1 month' after a
    -- 31-day month, although interval comparison counts a month as 30 days
    ELSIF cutoff > now() - window_length THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than (%) is shorter than the insight window (%)', older_than, window_length
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Insights inside the window may not be applied yet; deleting them would lose them.',
                  HINT = 'Use an interval of at least bondhu.settings.insight_window.';
    END IF;
    PERFORM bondhu.require_superuser_owned_tables();
    run := bondhu.lock_run('insights_cleanup');
    IF run.id IS NULL THEN
        INSERT INTO bondhu.task_runs (task_name, status, cutoff, resume_from, metadata)
        VALUES ('insights_cleanup', 'running', cutoff,
                least((SELECT min(c."timestamp") FROM public.chat_personality_insights c WHERE c."timestamp" < cutoff),
                      (SELECT min(e.created_at) FROM public.entertainment_interactions e
                       WHERE e.created_at < cutoff AND e.personality_insights IS NOT NULL)),
                jsonb_build_object('older_than', older_than, 'cutoff', cutoff,
                                   'chat_insights_deleted', 0, 'entertainment_insights_cleared', 0))
        RETURNING * INTO run;
    END IF;
    RETURN run;
END $$;


-- Removes the run's next slice_length of insights before its cutoff, oldest first (all
-- of them when slice_length is NULL), and adds the counts to the run's row. Returns
-- whether slices are left. If it fails, its work is rolled back, the run is marked
-- failed, and it returns false.
CREATE FUNCTION bondhu.cleanup_slice(run_id uuid, slice_length interval) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs;
    from_time timestamptz;
    to_time timestamptz;
    chat_deleted bigint;
    entertainment_cleared bigint;
    error_text text;
    error_state text;
BEGIN
    PERFORM pg_advisory_xact_lock(bondhu.lock_key('insights_cleanup'));
    run := bondhu.own_run(run_id, 'insights_cleanup');
    IF run.status <> 'running' THEN
        RETURN false;
    ELSIF slice_length <= interval '0' THEN
        RAISE EXCEPTION 'bondhu: slice_length must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF slice_length IS NOT NULL AND (run.resume_from IS NULL OR run.resume_from >= run.cutoff) THEN
        UPDATE bondhu.task_runs t SET all_done = true WHERE t.id = run_id;
        RETURN false;
    END IF;
    -- NULL: since ever
    from_time := CASE WHEN slice_length IS NOT NULL THEN run.resume_from END;
    to_time := least(from_time + slice_length, run.cutoff);
    DELETE FROM public.chat_personality_insights c
    WHERE c."timestamp" < to_time AND (from_time IS NULL OR c."timestamp" >= from_time);
    GET DIAGNOSTICS chat_deleted = ROW_COUNT;
    UPDATE public.entertainment_interactions e SET personality_insights = NULL
    WHERE e.created_at < to_time AND (from_time IS NULL OR e.created_at >= from_time)
      AND e.personality_insights IS NOT NULL;
    GET DIAGNOSTICS entertainment_cleared = ROW_COUNT;
    UPDATE bondhu.task_runs t SET
        records_processed = t.records_processed + chat_deleted + entertainment_cleared,
        metadata = t.metadata || jsonb_build_object(
            'chat_insights_deleted', (t.metadata ->> 'chat_insights_deleted')::bigint + chat_deleted,
            'entertainment_insights_cleared', (t.metadata ->> 'entertainment_insights_cleared')::bigint + entertainment_cleared),
        resume_from = to_time,
        all_done = to_time >= run.cutoff
    WHERE t.id = run_id;
    RETURN to_time < run.cutoff;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_text = MESSAGE_TEXT, error_state = RETURNED_SQLSTATE;
    IF error_state IN ('55000', '22023') THEN
        RAISE;
    END IF;
    UPDATE bondhu.task_runs t SET status = 'failed', error_message = error_text,
        metadata = t.metadata || jsonb_build_object('sqlstate', error_state)
    WHERE t.id = run_id;
    RETURN false;
END $$;


-- Closes the run, and prunes the run log.
CREATE FUNCTION bondhu.finish_cleanup_run(run_id uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    log_pruned bigint;
    run bondhu.task_runs := bondhu.own_run(run_id, 'insights_cleanup');
BEGIN
    DELETE FROM bondhu.task_runs t
    WHERE t.executed_at < now() - (SELECT s.run_log_retention FROM bondhu.settings s) AND t.id <> run_id;
    GET DIAGNOSTICS log_pruned = ROW_COUNT;
    UPDATE bondhu.task_runs t SET
        status = CASE WHEN t.status = 'failed' OR NOT t.all_done THEN 'failed' ELSE 'completed' END,
        error_message = CASE WHEN t.status <> 'failed' AND NOT t.all_done
                             THEN 'finished before every slice was done' ELSE t.error_message END,
        finished_at = clock_timestamp(),
        duration_seconds = round(extract(epoch FROM clock_timestamp() - t.executed_at)::numeric, 3),
        metadata = t.metadata || jsonb_build_object('run_log_rows_pruned', log_pruned)
    WHERE t.id = run_id
    RETURNING * INTO run;
    RETURN bondhu.cleanup_summary(run);
END $$;


CREATE OR REPLACE FUNCTION public.bondhu_cleanup_insights(older_than interval DEFAULT '90 days') RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs := bondhu.start_cleanup_run(older_than);
BEGIN
    IF run.status = 'skipped' THEN
        RETURN bondhu.cleanup_summary(run);
    END IF;
    PERFORM bondhu.cleanup_slice(run.id, NULL);
    RETURN bondhu.finish_cleanup_run(run.id);
END $$;


-- The same with the insight_retention setting, committing after every slice_length of
-- insights (oldest first): for pg_cron and large tables, so that no transaction holds
-- back vacuum for the whole run.
CREATE OR REPLACE PROCEDURE public.bondhu_run_cleanup(slice_length interval DEFAULT '1 day')
LANGUAGE plpgsql AS $$
DECLARE
    run bondhu.task_runs;
BEGIN
    IF slice_length IS NULL OR slice_length <= interval '0' THEN
        RAISE EXCEPTION 'bondhu_run_cleanup: slice_length must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM bondhu.refuse_transaction_block('bondhu_run_cleanup', 'SELECT bondhu_cleanup_insights()');
    run := bondhu.start_cleanup_run((SELECT s.insight_retention FROM bondhu.settings s));
    IF run.status = 'skipped' THEN
        RETURN;
    END IF;
    COMMIT;
    WHILE bondhu.cleanup_slice(run.id, slice_length) LOOP
        COMMIT;
    END LOOP;
    COMMIT;
    PERFORM bondhu.finish_cleanup_run(run.id);
    COMMIT;
END $$;


-- Refuses, with 25001, to start a procedure that commits inside a transaction block
-- (its first COMMIT would fail there); names the function to use instead.
CREATE FUNCTION bondhu.refuse_transaction_block(procedure_name text, instead text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.in_transaction_block() THEN
        RAISE EXCEPTION '% cannot run inside a transaction block', procedure_name
            USING ERRCODE = 'active_sql_transaction',
                  DETAIL = 'It commits after each batch.',
                  HINT = format('Call it outside BEGIN ... COMMIT, or use %s, which runs in one transaction.', instead);
    END IF;
END $$;


------------------------------------------------------------------------------------
-- Jobs run as bondhu_scheduler and are recognized by more than their name (scheduling.sql)
------------------------------------------------------------------------------------

-- The role bondhu's jobs run as: it can log in (pg_cron connects as it, by a
-- background worker or over libpq to cron.host) and may run the two procedures (see
-- security.sql). Never a superuser.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bondhu_scheduler') THEN
        CREATE ROLE bondhu_scheduler LOGIN NOINHERIT;
    END IF;
    ALTER ROLE bondhu_scheduler LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
END $$;

COMMENT ON ROLE bondhu_scheduler IS
    'bondhu''s pg_cron jobs run as this role. It may run bondhu_run_update_all and bondhu_run_cleanup, nothing else.';


DROP FUNCTION bondhu.jobs();

-- id in health output, pg_cron job name, command.
CREATE FUNCTION bondhu.jobs() RETURNS TABLE (id text, jobname text, command text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('personality_update', 'bondhu_personality_update', 'CALL public.bondhu_run_update_all()'),
           ('insights_cleanup', 'bondhu_insights_cleanup', 'CALL public.bondhu_run_cleanup()')
$$;


-- bondhu's jobs in cron.job (none without pg_cron).
CREATE FUNCTION bondhu.own_jobs()
RETURNS TABLE (jobid bigint, id text, jobname text, schedule text, command text, active boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.cron_installed() THEN
        RETURN QUERY
        SELECT j.jobid, b.id, j.jobname::text, j.schedule, j.command, j.active
        FROM cron.job j JOIN bondhu.jobs() b ON b.jobname = j.jobname AND b.command = j.command
        WHERE j.username = 'bondhu_scheduler' AND j.database = current_database();
    END IF;
END $$;


-- 0.2.0's jobs ran as the extension's owner: the same schedules now run as
-- bondhu_scheduler. A job of another role with the same name is not touched.
DO $$
DECLARE
    job record;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RETURN;
    END IF;
    FOR job IN
        SELECT j.jobid, j.jobname, j.schedule, j.command, j.active
        FROM cron.job j JOIN bondhu.jobs() b ON b.jobname = j.jobname AND b.command = j.command
        WHERE j.database = current_database()
          AND j.username = (SELECT r.rolname FROM pg_catalog.pg_extension e
                            JOIN pg_catalog.pg_roles r ON r.oid = e.extowner WHERE e.extname = 'bondhu')
    LOOP
        PERFORM cron.unschedule(job.jobid);
        PERFORM cron.schedule_in_database(job.jobname, job.schedule, job.command, current_database(),
                                          'bondhu_scheduler', job.active);
    END LOOP;
END $$;

DROP FUNCTION bondhu.cron_next_run(text, timestamptz);

-- The zone pg_cron evaluates schedules in: cron.timezone from pg_cron 1.5 on (which has
-- the setting), GMT before.
CREATE FUNCTION bondhu.cron_timezone() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('cron.timezone', true), ''), 'GMT')
$$;


-- The next time a cron schedule fires after a moment, when its fields are read as wall
-- clock time in `zone`, as pg_cron does, daylight-saving changes included: a wall clock
-- time that a change skips runs when the clock jumps; one that comes twice runs the
-- first time. NULL when the schedule never fires.
CREATE FUNCTION bondhu.cron_next_run(schedule text, after timestamptz, zone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wall_clock timestamp := to_timestamp(bondhu.cron_next_run_epoch(
        schedule, extract(epoch FROM (after AT TIME ZONE zone))::double precision)) AT TIME ZONE 'UTC';
    moment timestamptz := wall_clock AT TIME ZONE zone;
BEGIN
    IF moment AT TIME ZONE zone <> wall_clock THEN
        -- skipped: the first minute whose wall clock time is past it (changes are at most
        -- a few hours)
        RETURN (SELECT min(t) FROM generate_series(moment - interval '3 hours', moment, interval '1 minute') t
                WHERE t AT TIME ZONE zone > wall_clock AND t > after);
    END IF;
    -- twice: Postgres reads it as the later time; the earlier one, if there is one
    RETURN coalesce((SELECT min(t) FROM unnest(ARRAY[moment - interval '1 hour', moment - interval '30 minutes']) t
                     WHERE t AT TIME ZONE zone = wall_clock AND t > after), moment);
END $$;


CREATE OR REPLACE FUNCTION bondhu.scheduled_jobs() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', j.id, 'jobname', j.jobname, 'schedule', j.schedule,
                                                 'command', j.command, 'active', j.active) ORDER BY j.id DESC),
                    '[]'::jsonb)
    FROM bondhu.own_jobs() j
$$;


CREATE OR REPLACE FUNCTION public.bondhu_schedule(update_schedule text DEFAULT '0 2 * * *',
                                       cleanup_schedule text DEFAULT '0 3 * * 0') RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM bondhu.cron_check('update_schedule', update_schedule);
    PERFORM bondhu.cron_check('cleanup_schedule', cleanup_schedule);
    IF NOT bondhu.cron_installed() THEN
        RAISE EXCEPTION 'bondhu_schedule: pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, '
                         'run CREATE EXTENSION pg_cron, then call bondhu_schedule() again.';
    END IF;
    -- A job name and role that exist already are updated in place: calling this again
    -- is harmless. Only a superuser may name another role (this function runs as the
    -- extension's owner).
    PERFORM cron.schedule_in_database(b.jobname,
                                      CASE b.id WHEN 'personality_update' THEN update_schedule ELSE cleanup_schedule END,
                                      b.command, current_database(), 'bondhu_scheduler', true)
    FROM bondhu.jobs() b;
    RETURN jsonb_build_object('scheduled', bondhu.scheduled_jobs(), 'timezone', bondhu.cron_timezone());
END $$;


CREATE OR REPLACE FUNCTION public.bondhu_unschedule() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed jsonb;
BEGIN
    IF NOT bondhu.cron_installed() THEN
        RETURN jsonb_build_object('unscheduled', '[]'::jsonb);
    END IF;
    removed := bondhu.scheduled_jobs();
    PERFORM cron.unschedule(j.jobid) FROM bondhu.own_jobs() j;
    RETURN jsonb_build_object('unscheduled', removed);
END $$;


-- The seed's admin health response. Status rules:
CREATE OR REPLACE FUNCTION public.bondhu_system_health() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg bondhu.settings;
    preloaded boolean := 'pg_cron' = ANY (string_to_array(
        replace(current_setting('shared_preload_libraries'), ' ', ''), ','));
    launcher boolean := EXISTS (SELECT FROM pg_catalog.pg_stat_activity WHERE backend_type = 'pg_cron launcher');
    installed boolean := bondhu.cron_installed();
    jobs jsonb := '[]';
    problems text[] := '{}';
    scheduler_running boolean;
    job_problems text[];
    last_update bondhu.task_runs;
    last_success bondhu.task_runs;
    last_cleanup bondhu.task_runs;
    update_schedule text;
    missed_since timestamptz;
    status text;
    task text;
    zone text := bondhu.cron_timezone();
BEGIN
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    -- Runs left 'running' by a session that moved on.
    FOREACH task IN ARRAY ARRAY['personality_update', 'insights_cleanup'] LOOP
        PERFORM bondhu.mark_interrupted_runs(task);
    END LOOP;
    SELECT * INTO last_update FROM bondhu.task_runs t
    WHERE t.task_name = 'personality_update' AND t.status <> 'skipped' ORDER BY t.executed_at DESC LIMIT 1;
    SELECT * INTO last_success FROM bondhu.task_runs t
    WHERE t.task_name = 'personality_update' AND t.status IN ('completed', 'completed_with_errors')
    ORDER BY t.executed_at DESC LIMIT 1;
    SELECT * INTO last_cleanup FROM bondhu.task_runs t
    WHERE t.task_name = 'insights_cleanup' AND t.status <> 'skipped' ORDER BY t.executed_at DESC LIMIT 1;

    IF NOT preloaded THEN problems := problems || 'pg_cron is not in shared_preload_libraries'::text; END IF;
    IF preloaded AND NOT launcher THEN problems := problems || 'the pg_cron launcher is not running'::text; END IF;
    IF NOT installed THEN
        problems := problems || 'pg_cron is not installed in this database'::text;
    ELSE
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', b.id, 'jobname', b.jobname, 'schedule', j.schedule,
                   'trigger', CASE WHEN j.jobid IS NULL THEN NULL ELSE 'cron[' || j.schedule || '] ' || zone END,
                   'active', coalesce(j.active, false),
                   'next_run_time', CASE WHEN j.active THEN bondhu.cron_next_run(j.schedule, now(), zone) END,
                   'last_run', (SELECT jsonb_build_object('status', d.status, 'start_time', d.start_time,
                                                          'end_time', d.end_time, 'message', d.return_message)
                                FROM cron.job_run_details d WHERE d.jobid = j.jobid
                                ORDER BY d.runid DESC LIMIT 1)) ORDER BY b.id DESC), '[]'),
               max(j.schedule) FILTER (WHERE b.id = 'personality_update'),
               array_agg(b.jobname || CASE WHEN j.jobid IS NULL THEN ' is not scheduled (call bondhu_schedule())'
                                           ELSE ' is not active' END)
                   FILTER (WHERE j.jobid IS NULL OR NOT j.active)
        INTO jobs, update_schedule, job_problems
        FROM bondhu.jobs() b LEFT JOIN bondhu.own_jobs() j ON j.id = b.id;
        problems := problems || coalesce(job_problems, '{}');
    END IF;
    scheduler_running := cardinality(problems) = 0;
    -- what exactly once rests on: bondhu's triggers, enabled ALWAYS, on tables that
    -- superusers own
    problems := problems || ARRAY(
        SELECT format('bondhu''s trigger %s on %s is %s: insights may be lost or counted twice '
                      '(a superuser: ALTER TABLE %s ENABLE ALWAYS TRIGGER %I)',
                      d.name, d.relation, CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'not enabled ALWAYS' END,
                      d.relation, d.name)
        FROM bondhu.data_triggers() d
        LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = d.relation AND t.tgname = d.name
        WHERE t.oid IS NULL OR t.tgenabled <> 'A');
    problems := problems || ARRAY(
        SELECT format('%s is owned by %s, which is not a superuser: bondhu refuses to run '
                      '(a superuser: ALTER TABLE %s OWNER TO a superuser)', d.relation, r.rolname, d.relation)
        FROM bondhu.data_tables() d
        JOIN pg_catalog.pg_class c ON c.oid = d.relation
        JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
        WHERE d.kind = 'TABLE' AND NOT r.rolsuper);

    IF update_schedule IS NOT NULL AND last_success.executed_at IS NOT NULL THEN
        missed_since := bondhu.cron_next_run(update_schedule, last_success.executed_at, zone);
    END IF;
    status := CASE
        WHEN cardinality(problems) > 0 OR last_update.status = 'failed' THEN 'unhealthy'
        WHEN missed_since + interval '1 hour' < now() OR last_update.status = 'completed_with_errors' THEN 'degraded'
        ELSE 'healthy' END;

    RETURN jsonb_build_object(
        'status', status,
        'scheduler_running', scheduler_running,
        'problems', to_jsonb(problems),
        'timezone', zone,
        'scheduled_jobs', jobs,
        'last_personality_update', CASE WHEN last_update.id IS NOT NULL THEN jsonb_build_object(
            'task_name', last_update.task_name, 'executed_at', last_update.executed_at,
            'users_processed', last_update.users_processed,
            'successful_updates', last_update.successful_updates,
            'failed_updates', last_update.failed_updates, 'status', last_update.status,
            'error_message', last_update.error_message) END,
        'missed_run_since', CASE WHEN missed_since + interval '1 hour' < now() THEN missed_since END,
        'last_cleanup', CASE WHEN last_cleanup.id IS NOT NULL THEN jsonb_build_object(
            'task_name', last_cleanup.task_name, 'executed_at', last_cleanup.executed_at,
            'records_processed', last_cleanup.records_processed, 'status', last_cleanup.status) END,
        'active_users_count', (SELECT count(DISTINCT i.user_id) FROM bondhu.insights i
                               WHERE i.observed_at > now() - cfg.active_user_window),
        'pending_insights', (SELECT count(*)
                             FROM bondhu.insights i
                             CROSS JOIN bondhu.global_cursor() g
                             LEFT JOIN public.user_personality_profiles p ON p.user_id = i.user_id
                             WHERE i.ingest_pos >= g.xmin_pos
                               AND NOT bondhu.position_applied(i.ingest_pos, g.xmin_pos, g.xmax_pos, g.xip_pos)
                               AND NOT coalesce(bondhu.position_applied(i.ingest_pos, p.applied_xmin,
                                                                        p.applied_xmax, p.applied_xip), false)));
END $$;


------------------------------------------------------------------------------------
-- DROP EXTENSION of another extension is left alone (uninstall.sql)
------------------------------------------------------------------------------------
DROP EVENT TRIGGER bondhu_before_drop_extension;
DROP EVENT TRIGGER bondhu_after_drop_extension;
DROP FUNCTION bondhu.before_drop_extension();
DROP FUNCTION bondhu.after_drop_extension();

-- bondhu: DROP EXTENSION loses nothing and leaves nothing behind.
--
-- An event trigger at the start of DROP EXTENSION reads the command (in Rust:
-- bondhu.on_drop_extension) and acts only when it names bondhu; a DROP EXTENSION of
-- any other extension, by any role, runs as if bondhu were not there. When bondhu is
-- dropped, its pg_cron jobs go (recognized as bondhu's by name, owner, database and
-- command: another role's job of the same name is not touched), and the application's
-- tables are detached (data.sql), so they stay with every row.

CREATE FUNCTION bondhu.prepare_drop() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.cron_installed() THEN
        PERFORM cron.unschedule(j.jobid) FROM bondhu.own_jobs() j;
    END IF;
    PERFORM bondhu.detach_data_tables();
END $$;


CREATE EVENT TRIGGER bondhu_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION bondhu.on_drop_extension();


------------------------------------------------------------------------------------
-- Privileges from one list; service_role directly; nothing of bondhu's for PUBLIC (security.sql)
------------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION bondhu.ingest_position(), bondhu.resolve_incarnation() FROM PUBLIC;

------------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC, then granted deliberately, from one list.
------------------------------------------------------------------------------------
-- The public API, and who may call each: 'operators' (bondhu_operator, service_role),
-- 'scheduler' too (bondhu_scheduler, the role of the pg_cron jobs), 'authenticated'
-- too (the function checks that the signed-in user is the profile's owner).
CREATE FUNCTION bondhu.public_api() RETURNS TABLE (kind text, signature text, callers text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('FUNCTION', 'public.bondhu_update_personality(uuid)', 'authenticated'),
           ('FUNCTION', 'public.bondhu_update_all()', 'operators'),
           ('PROCEDURE', 'public.bondhu_run_update_all(integer)', 'scheduler'),
           ('FUNCTION', 'public.bondhu_cleanup_insights(interval)', 'operators'),
           ('PROCEDURE', 'public.bondhu_run_cleanup(interval)', 'scheduler'),
           ('FUNCTION', 'public.bondhu_schedule(text, text)', 'operators'),
           ('FUNCTION', 'public.bondhu_unschedule()', 'operators'),
           ('FUNCTION', 'public.bondhu_system_health()', 'operators')
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
    grantee text;
    operators text[] := ARRAY['bondhu_operator'];
    nobody text[] := ARRAY['PUBLIC'];
    tables constant text := 'public.chat_personality_insights, public.entertainment_interactions, '
                            'public.user_personality_profiles, public.personality_profile_history';
    -- what a procedure's run calls as its caller (its steps are SECURITY DEFINER)
    run_steps constant text := 'bondhu.refuse_transaction_block(text, text), bondhu.in_transaction_block(), '
        'bondhu.start_update_run(), bondhu.apply_update_batch(uuid, integer), bondhu.finish_update_run(uuid), '
        'bondhu.start_cleanup_run(interval), bondhu.cleanup_slice(uuid, interval), bondhu.finish_cleanup_run(uuid)';
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        GRANT bondhu_operator TO service_role;
        operators := operators || 'service_role'::text;
    END IF;
    nobody := nobody || ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
                              WHERE r.rolname IN ('anon', 'authenticated'));

    -- Nothing for anybody first.
    FOREACH grantee IN ARRAY nobody LOOP
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA bondhu FROM %s', grantee);
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
        EXECUTE format('GRANT EXECUTE ON %s %s TO %s', api.kind, api.signature, array_to_string(operators, ', '));
        IF api.callers = 'scheduler' THEN
            EXECUTE format('GRANT EXECUTE ON %s %s TO bondhu_scheduler', api.kind, api.signature);
        ELSIF api.callers = 'authenticated' AND 'authenticated' = ANY (nobody) THEN
            EXECUTE format('GRANT EXECUTE ON %s %s TO authenticated', api.kind, api.signature);
        END IF;
    END LOOP;
    FOREACH grantee IN ARRAY operators || 'bondhu_scheduler'::text LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA bondhu TO %s', grantee);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', run_steps, grantee);
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
END $$;


REVOKE ALL ON FUNCTION bondhu.grant_privileges() FROM PUBLIC;


SELECT bondhu.attach_data_tables();
SELECT bondhu.resolve_incarnation();
SELECT bondhu.grant_privileges();
