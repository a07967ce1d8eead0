-- bondhu: the application's tables (schema public, as the app and Supabase expect them).
--
-- They hold the application's data, so bondhu never deletes them: CREATE EXTENSION
-- creates them when missing and adopts them when they exist (the Python pipeline's
-- tables, or bondhu's own left behind by DROP EXTENSION), keeping every row; DROP
-- EXTENSION detaches them first (see uninstall.sql). While installed they are members
-- of the extension with their data in pg_dump's output (configuration tables).
--
-- Rows that predate bondhu count as applied (the Python pipeline applied them):
-- ingest_pos 2, below every real position. Rows written while bondhu was not installed
-- have no position and are pending: adoption gives them the installing transaction's.

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

-- Analysis often adds the insight to an interaction written earlier: that is when the
-- insight is written, so it gets the position of that transaction.
CREATE FUNCTION bondhu.position_added_insight() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.personality_insights IS NULL AND NEW.personality_insights IS NOT NULL THEN
        NEW.ingest_pos := bondhu.ingest_position();
    END IF;
    RETURN NEW;
END $$;

-- The tables bondhu keeps as members, and what each needs for pg_dump.
CREATE FUNCTION bondhu.data_tables() RETURNS TABLE (relation regclass, kind text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::regclass, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END
    FROM unnest(ARRAY['public.chat_personality_insights', 'public.entertainment_interactions',
                      'public.user_personality_profiles', 'public.personality_profile_history',
                      'public.personality_profile_history_id_seq']) AS n(name)
    JOIN pg_catalog.pg_class c ON c.oid = to_regclass(n.name)
$$;

CREATE FUNCTION bondhu.is_member(relation regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = relation
                     AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e')
$$;

-- Brings the tables to what bondhu needs and makes them members of the extension,
-- keeping every row. Idempotent. in_create_extension: called by CREATE EXTENSION's
-- script (which may register configuration tables); otherwise by the event trigger
-- that re-attaches tables when another extension was dropped.
CREATE FUNCTION bondhu.attach_data_tables(in_create_extension boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
    registered oid[];
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
        IF EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = insight.t AND attname = 'ingest_pos' AND NOT attisdropped) THEN
            EXECUTE format('UPDATE %s SET ingest_pos = bondhu.ingest_position() WHERE ingest_pos IS NULL', insight.t);
        ELSE
            EXECUTE format('ALTER TABLE %s ADD COLUMN ingest_pos bigint DEFAULT 2', insight.t);
        END IF;
        EXECUTE format('ALTER TABLE %s ALTER COLUMN ingest_pos SET DEFAULT bondhu.ingest_position(), '
                       'ALTER COLUMN ingest_pos SET NOT NULL', insight.t);
        EXECUTE format('COMMENT ON COLUMN %s.ingest_pos IS %L', insight.t,
                       'Managed by bondhu: which transaction wrote the insight. Leave it to its default.');
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
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgname = 'bondhu_position_added_insight'
                   AND tgrelid = 'public.entertainment_interactions'::regclass) THEN
        CREATE TRIGGER bondhu_position_added_insight
            BEFORE UPDATE OF personality_insights ON public.entertainment_interactions
            FOR EACH ROW EXECUTE FUNCTION bondhu.position_added_insight();
    END IF;

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

    registered := (SELECT coalesce(e.extconfig, '{}') FROM pg_catalog.pg_extension e WHERE e.extname = 'bondhu');
    FOR member IN SELECT * FROM bondhu.data_tables() LOOP
        IF NOT bondhu.is_member(member.relation) THEN
            EXECUTE format('ALTER EXTENSION bondhu ADD %s %s', member.kind, member.relation);
        END IF;
        IF in_create_extension THEN
            PERFORM pg_catalog.pg_extension_config_dump(member.relation, '');
        ELSIF NOT member.relation::oid = ANY (registered) THEN
            -- pg_extension_config_dump only works inside CREATE EXTENSION: what it does.
            UPDATE pg_catalog.pg_extension
            SET extconfig = array_append(extconfig, member.relation::oid), extcondition = array_append(extcondition, '')
            WHERE extname = 'bondhu';
        END IF;
    END LOOP;
END $$;

-- Leaves the tables standing on their own: no longer members, and nothing in them that
-- depends on the extension (the ingest_pos default, the trigger). Rows written while
-- bondhu is not installed have no position; attach_data_tables makes them pending.
CREATE FUNCTION bondhu.detach_data_tables() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    member record;
BEGIN
    ALTER TABLE public.chat_personality_insights
        ALTER COLUMN ingest_pos DROP DEFAULT, ALTER COLUMN ingest_pos DROP NOT NULL;
    ALTER TABLE public.entertainment_interactions
        ALTER COLUMN ingest_pos DROP DEFAULT, ALTER COLUMN ingest_pos DROP NOT NULL;
    DROP TRIGGER IF EXISTS bondhu_position_added_insight ON public.entertainment_interactions;
    FOR member IN SELECT * FROM bondhu.data_tables() LOOP
        IF bondhu.is_member(member.relation) THEN
            EXECUTE format('ALTER EXTENSION bondhu DROP %s %s', member.kind, member.relation);
        END IF;
    END LOOP;
END $$;

SELECT bondhu.attach_data_tables(true);
