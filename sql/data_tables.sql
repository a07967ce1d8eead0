-- bondhu: the application's tables (schema public, as the app and Supabase expect them).
--
-- They hold the application's data, so bondhu never deletes them: CREATE EXTENSION
-- creates them when missing and adopts them when they exist (the Python pipeline's
-- tables, or bondhu's own left behind by DROP EXTENSION), keeping every row; DROP
-- EXTENSION detaches them first (see drop_extension.sql). While installed they are members
-- of the extension with their data in pg_dump's output (configuration tables).
--
-- Rows that predate bondhu count as applied (the Python pipeline applied them):
-- ingest_pos 2, below every real position. Rows written or changed while bondhu was
-- not installed have no position (a trigger bondhu leaves behind sees to it) and are
-- pending: adoption gives them the installing transaction's.
--
-- Positions are bondhu's alone: a trigger written in Rust (bondhu.position_insight)
-- assigns them and refuses a written one; a profile's cursor likewise
-- (bondhu.guard_profile_cursor). Both are named zz_bondhu_... so that they fire after
-- the application's own BEFORE triggers (Postgres fires them in name order) and see
-- the row as it will be stored, and both are enabled ALWAYS so that they fire for
-- logical replication's apply (session_replication_role = replica) too.

DO $$
BEGIN
    IF to_regclass('public.chat_personality_insights') IS NULL THEN
        CREATE TABLE public.chat_personality_insights (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL,
            session_id uuid,
            "timestamp" timestamptz NOT NULL DEFAULT now(),
            adjustments jsonb NOT NULL,
            message_context text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    END IF;
    IF to_regclass('public.entertainment_interactions') IS NULL THEN
        CREATE TABLE public.entertainment_interactions (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL,
            content_type text,
            interaction_type text,
            content_id text,
            interaction_data jsonb DEFAULT '{}',
            personality_insights jsonb,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    END IF;
    IF to_regclass('public.user_personality_profiles') IS NULL THEN
        CREATE TABLE public.user_personality_profiles (
            user_id uuid PRIMARY KEY,
            openness double precision NOT NULL DEFAULT 50 CONSTRAINT openness_0_to_100 CHECK (openness BETWEEN 0 AND 100),
            conscientiousness double precision NOT NULL DEFAULT 50 CONSTRAINT conscientiousness_0_to_100 CHECK (conscientiousness BETWEEN 0 AND 100),
            extraversion double precision NOT NULL DEFAULT 50 CONSTRAINT extraversion_0_to_100 CHECK (extraversion BETWEEN 0 AND 100),
            agreeableness double precision NOT NULL DEFAULT 50 CONSTRAINT agreeableness_0_to_100 CHECK (agreeableness BETWEEN 0 AND 100),
            neuroticism double precision NOT NULL DEFAULT 50 CONSTRAINT neuroticism_0_to_100 CHECK (neuroticism BETWEEN 0 AND 100),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            applied_xmin bigint,
            applied_xmax bigint,
            applied_xip bigint[]
        -- half of each page free: a run updates every row once, and each new version fits
        -- on its page (a HOT update, no new index entry)
        ) WITH (fillfactor = 50);
    END IF;
    IF to_regclass('public.personality_profile_history') IS NULL THEN
        CREATE TABLE public.personality_profile_history (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id uuid NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            task_id uuid,
            trigger text NOT NULL CONSTRAINT known_trigger CHECK (trigger IN ('update_all', 'self_update')),
            insights_processed integer NOT NULL,
            openness_before double precision NOT NULL,
            openness_after double precision NOT NULL,
            conscientiousness_before double precision NOT NULL,
            conscientiousness_after double precision NOT NULL,
            extraversion_before double precision NOT NULL,
            extraversion_after double precision NOT NULL,
            agreeableness_before double precision NOT NULL,
            agreeableness_after double precision NOT NULL,
            neuroticism_before double precision NOT NULL,
            neuroticism_after double precision NOT NULL
        );
        CREATE INDEX personality_profile_history_user_time
            ON public.personality_profile_history (user_id, applied_at);
    END IF;
END $$;
COMMENT ON TABLE public.personality_profile_history IS
    'One row per applied profile update: the audit trail and the data for a trait-evolution chart. task_id is the update_all run (NULL for a self-service update).';

-- Deleting a profile resets the user to 50 (the next update creates the profile
-- again), and what it had applied stays applied: every insight of the user that the
-- deleted profile's cursor or the global cursor covers is marked applied for good
-- (position 2) before the profile goes, so that not even a global cursor that starts
-- again (DROP and CREATE EXTENSION) applies it again. TRUNCATE does the same for every
-- profile.
-- It marks them under session_replication_role = replica, so that the application's
-- own triggers do not fire for bondhu's change, and tells bondhu's position trigger
-- that the position is bondhu's own (bondhu.writing_positions: kept, written by the
-- extension's owner, a superuser, also inside logical replication's workers).
CREATE FUNCTION bondhu.forget_profiles() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET session_replication_role = replica SET bondhu.writing_positions = on AS $$
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
-- transaction's position, as bondhu's trigger would have given it (bondhu.writing_positions:
-- inside logical replication's workers too, where given positions are otherwise ignored).
CREATE FUNCTION bondhu.position_late_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET bondhu.writing_positions = on AS $$
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

-- The tables bondhu keeps as members, what each needs for pg_dump, and its owner. Each
-- is looked up by key (OFFSET 0 keeps the lookup per name): hashing every relation of
-- the database for five names cost ~0.1 ms on each update (require_superuser_owned_tables).
CREATE FUNCTION bondhu.data_tables() RETURNS TABLE (relation regclass, kind text, owner oid)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::regclass, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.relowner
    FROM unnest(ARRAY['public.chat_personality_insights', 'public.entertainment_interactions',
                      'public.user_personality_profiles', 'public.personality_profile_history',
                      'public.personality_profile_history_id_seq']) AS n(name)
    CROSS JOIN LATERAL (SELECT c.oid, c.relkind, c.relowner FROM pg_catalog.pg_class c
                        WHERE c.oid = to_regclass(n.name) OFFSET 0) c
$$;

CREATE FUNCTION bondhu.is_member(relation regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = relation
                     AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e')
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
    SELECT t.relation, o.rolname INTO untrusted
    FROM bondhu.data_tables() t
    -- each table's owner, looked up by key (as in data_tables)
    CROSS JOIN LATERAL (SELECT r.rolname, r.rolsuper FROM pg_catalog.pg_roles r
                        WHERE r.oid = t.owner OFFSET 0) o
    WHERE t.kind = 'TABLE' AND NOT o.rolsuper
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
        -- the stand-in of detach_data_tables (named bondhu_uninstalled_insight until 0.3.0)
        EXECUTE format('DROP TRIGGER IF EXISTS zz_bondhu_uninstalled_insight ON %s', insight.t);
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

    DROP TRIGGER IF EXISTS zz_bondhu_uninstalled_profile ON public.user_personality_profiles;
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
-- and neither a position, nor a profile's cursor, nor (superusers aside) a profile's
-- user can be written; attach_data_tables drops them again. Named to fire after the
-- app's own BEFORE triggers (in name order), as bondhu's do, so that they see the
-- document an app trigger writes.
CREATE FUNCTION bondhu.detach_data_tables() RETURNS void
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
        IF TG_OP = 'UPDATE' AND NEW.user_id IS DISTINCT FROM OLD.user_id
           AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
            -- as when bondhu is installed: the cursor belongs to its user, and would cover
            -- insights of another user never applied
            RAISE EXCEPTION 'bondhu: user_id is assigned by bondhu and cannot be written'
                USING ERRCODE = 'insufficient_privilege', HINT = 'Leave user_id out of the INSERT or UPDATE.';
        END IF;
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
    CREATE TRIGGER zz_bondhu_uninstalled_insight BEFORE INSERT OR UPDATE ON public.chat_personality_insights
        FOR EACH ROW EXECUTE FUNCTION public.bondhu_uninstalled_insight('adjustments');
    CREATE TRIGGER zz_bondhu_uninstalled_insight BEFORE INSERT OR UPDATE ON public.entertainment_interactions
        FOR EACH ROW EXECUTE FUNCTION public.bondhu_uninstalled_insight('personality_insights');
    CREATE TRIGGER zz_bondhu_uninstalled_profile BEFORE INSERT OR UPDATE ON public.user_personality_profiles
        FOR EACH ROW EXECUTE FUNCTION public.bondhu_uninstalled_profile();
    ALTER TABLE public.chat_personality_insights ENABLE ALWAYS TRIGGER zz_bondhu_uninstalled_insight;
    ALTER TABLE public.entertainment_interactions ENABLE ALWAYS TRIGGER zz_bondhu_uninstalled_insight;
    ALTER TABLE public.user_personality_profiles ENABLE ALWAYS TRIGGER zz_bondhu_uninstalled_profile;
    FOR member IN SELECT * FROM bondhu.data_tables() LOOP
        IF bondhu.is_member(member.relation) THEN
            EXECUTE format('ALTER EXTENSION bondhu DROP %s %s', member.kind, member.relation);
        END IF;
    END LOOP;
END $detach$;

SELECT bondhu.require_superuser_owned_tables();
SELECT bondhu.attach_data_tables();
-- The pipeline state, now rather than at the first insight (which would make every
-- other first writer wait for its transaction).
SELECT bondhu.resolve_incarnation();
