-- bondhu 0.1.0 -> 0.2.0
-- The application's tables are adopted when they exist and detached on DROP EXTENSION
-- (their data is never dropped); a NULL trait of an adopted profile starts at 50; a chat
-- insight without "timestamp" is dated by created_at.
\echo Use "ALTER EXTENSION bondhu UPDATE TO '0.2.0'" to load this file. \quit

-- DROP EXTENSION handling: replaced by before/after_drop_extension below.
DROP EVENT TRIGGER bondhu_set_jobs_aside;
DROP EVENT TRIGGER bondhu_put_jobs_back;
DROP FUNCTION bondhu.set_jobs_aside();
DROP FUNCTION bondhu.put_jobs_back();

ALTER INDEX public.chat_personality_insights_timestamp_brin RENAME TO chat_personality_insights_observed_brin;
ALTER INDEX public.entertainment_interactions_created_brin RENAME TO entertainment_interactions_observed_brin;


CREATE OR REPLACE FUNCTION bondhu.adjusted_trait(current double precision, total numeric, dampening numeric)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(100, greatest(0, coalesce(current, 50)::numeric + dampening * total))::double precision
$$;

CREATE OR REPLACE FUNCTION bondhu.apply_pending(p_users uuid[], p_global bondhu.cursor, p_new bondhu.cursor,
                                     p_task_id uuid, p_trigger text)
RETURNS TABLE (user_id uuid, insights_processed integer, chat_insights integer,
               entertainment_insights integer, rejected_insights integer, stale_insights integer,
               ignored_keys integer, traits_before double precision[], traits_after double precision[])
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg bondhu.settings;
BEGIN
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    RETURN QUERY
    WITH pending AS MATERIALIZED (
        SELECT i.user_id, i.source,
               bondhu.insight_adjustments(i.doc) AS adj,
               i.observed_at >= now() - cfg.insight_window AS fresh,
               bondhu.unknown_key_count(i.doc) AS unknown_keys
        FROM bondhu.insights i
        JOIN public.user_personality_profiles p ON p.user_id = i.user_id
        WHERE i.ingest_pos >= (p_global).xmin_pos
          AND (p_users IS NULL OR i.user_id = ANY (p_users))
          AND NOT bondhu.position_applied(i.ingest_pos, (p_global).xmin_pos, (p_global).xmax_pos, (p_global).xip_pos)
          AND bondhu.position_applied(i.ingest_pos, (p_new).xmin_pos, (p_new).xmax_pos, (p_new).xip_pos)
          AND NOT coalesce(bondhu.position_applied(i.ingest_pos, p.applied_xmin, p.applied_xmax, p.applied_xip), false)
    ), classified AS (
        SELECT pending.*, (adj IS NOT NULL AND array_position(adj, NULL) IS NULL) AS valid
        FROM pending
    ), totals AS (
        SELECT c.user_id,
               count(*) FILTER (WHERE c.fresh AND c.valid)::integer AS applied,
               count(*) FILTER (WHERE c.fresh AND c.valid AND c.source = 'chat')::integer AS chat,
               count(*) FILTER (WHERE c.fresh AND c.valid AND c.source = 'entertainment')::integer AS entertainment,
               count(*) FILTER (WHERE c.fresh AND NOT c.valid)::integer AS rejected,
               count(*) FILTER (WHERE NOT c.fresh)::integer AS stale,
               coalesce(sum(c.unknown_keys) FILTER (WHERE c.fresh AND c.valid), 0)::integer AS ignored,
               coalesce(sum(c.adj[1]) FILTER (WHERE c.fresh AND c.valid), 0) AS d1,
               coalesce(sum(c.adj[2]) FILTER (WHERE c.fresh AND c.valid), 0) AS d2,
               coalesce(sum(c.adj[3]) FILTER (WHERE c.fresh AND c.valid), 0) AS d3,
               coalesce(sum(c.adj[4]) FILTER (WHERE c.fresh AND c.valid), 0) AS d4,
               coalesce(sum(c.adj[5]) FILTER (WHERE c.fresh AND c.valid), 0) AS d5
        FROM classified c
        GROUP BY c.user_id
    ), updated AS (
        UPDATE public.user_personality_profiles p SET
            openness = bondhu.adjusted_trait(p.openness, t.d1, cfg.dampening),
            conscientiousness = bondhu.adjusted_trait(p.conscientiousness, t.d2, cfg.dampening),
            extraversion = bondhu.adjusted_trait(p.extraversion, t.d3, cfg.dampening),
            agreeableness = bondhu.adjusted_trait(p.agreeableness, t.d4, cfg.dampening),
            neuroticism = bondhu.adjusted_trait(p.neuroticism, t.d5, cfg.dampening),
            updated_at = CASE WHEN t.applied > 0 THEN now() ELSE p.updated_at END,
            applied_xmin = (p_new).xmin_pos,
            applied_xmax = (p_new).xmax_pos,
            applied_xip = (p_new).xip_pos
        FROM totals t, public.user_personality_profiles old
        WHERE p.user_id = t.user_id AND old.user_id = t.user_id
        RETURNING p.user_id, t.applied, t.chat, t.entertainment, t.rejected, t.stale, t.ignored,
                  -- a trait without a value (an adopted profile) was 50, as adjusted_trait counts it
                  ARRAY[coalesce(old.openness, 50), coalesce(old.conscientiousness, 50), coalesce(old.extraversion, 50),
                        coalesce(old.agreeableness, 50), coalesce(old.neuroticism, 50)] AS before,
                  ARRAY[p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism] AS after
    ), history AS (
        INSERT INTO public.personality_profile_history
            (user_id, applied_at, task_id, trigger, insights_processed,
             openness_before, openness_after, conscientiousness_before, conscientiousness_after,
             extraversion_before, extraversion_after, agreeableness_before, agreeableness_after,
             neuroticism_before, neuroticism_after)
        SELECT u.user_id, now(), p_task_id, p_trigger, u.applied,
               u.before[1], u.after[1], u.before[2], u.after[2], u.before[3], u.after[3],
               u.before[4], u.after[4], u.before[5], u.after[5]
        FROM updated u
        WHERE u.applied > 0
    )
    SELECT u.user_id, u.applied, u.chat, u.entertainment, u.rejected, u.stale, u.ignored, u.before, u.after
    FROM updated u;
END $$;

CREATE OR REPLACE FUNCTION public.bondhu_update_personality(user_id uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    target uuid := bondhu_update_personality.user_id;
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
    FROM bondhu.apply_pending(ARRAY[target], bondhu.global_cursor(), snapshot, NULL, 'self_update');
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

CREATE OR REPLACE FUNCTION bondhu.apply_all_pending(p_task_id uuid,
    OUT users_processed integer, OUT successful_updates integer, OUT failed_updates integer,
    OUT insights_processed bigint, OUT rejected_insights bigint, OUT stale_insights bigint,
    OUT ignored_keys bigint, OUT failed_user_ids uuid[], OUT first_error text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    snapshot bondhu.cursor := bondhu.current_cursor();
    covered bondhu.cursor := bondhu.global_cursor();
    one_user uuid;
    one_result record;
BEGIN
    failed_user_ids := '{}';
    IF to_regclass('pg_temp.bondhu_run_users') IS NULL THEN
        CREATE TEMP TABLE bondhu_run_users (user_id uuid PRIMARY KEY) ON COMMIT DROP;
    ELSE
        TRUNCATE pg_temp.bondhu_run_users;
    END IF;
    INSERT INTO pg_temp.bondhu_run_users
    SELECT DISTINCT i.user_id
    FROM bondhu.insights i
    WHERE i.ingest_pos >= (covered).xmin_pos
      AND NOT bondhu.position_applied(i.ingest_pos, (covered).xmin_pos, (covered).xmax_pos, (covered).xip_pos)
      AND bondhu.position_applied(i.ingest_pos, (snapshot).xmin_pos, (snapshot).xmax_pos, (snapshot).xip_pos);

    INSERT INTO public.user_personality_profiles (user_id)
    SELECT u.user_id FROM pg_temp.bondhu_run_users u
    ON CONFLICT (user_id) DO NOTHING;
    -- Lock in key order (no deadlock with another locker of several profiles); a
    -- self-service update holding one of them is waited for, then seen.
    PERFORM FROM public.user_personality_profiles p
    WHERE p.user_id IN (SELECT u.user_id FROM pg_temp.bondhu_run_users u)
    ORDER BY p.user_id
    FOR UPDATE OF p;

    BEGIN
        SELECT count(*), count(*), 0, coalesce(sum(a.insights_processed), 0),
               coalesce(sum(a.rejected_insights), 0), coalesce(sum(a.stale_insights), 0),
               coalesce(sum(a.ignored_keys), 0)
        INTO users_processed, successful_updates, failed_updates, insights_processed,
             rejected_insights, stale_insights, ignored_keys
        FROM bondhu.apply_pending(NULL, covered, snapshot, p_task_id, 'update_all') a;
    EXCEPTION WHEN OTHERS THEN
        -- Some user's update fails: redo them one by one so the others still go through.
        GET STACKED DIAGNOSTICS first_error = MESSAGE_TEXT;
        users_processed := 0; successful_updates := 0; failed_updates := 0;
        insights_processed := 0; rejected_insights := 0; stale_insights := 0; ignored_keys := 0;
        FOR one_user IN SELECT u.user_id FROM pg_temp.bondhu_run_users u ORDER BY u.user_id LOOP
            users_processed := users_processed + 1;
            BEGIN
                SELECT coalesce(sum(a.insights_processed), 0) AS applied,
                       coalesce(sum(a.rejected_insights), 0) AS rejected,
                       coalesce(sum(a.stale_insights), 0) AS stale,
                       coalesce(sum(a.ignored_keys), 0) AS ignored
                INTO one_result
                FROM bondhu.apply_pending(ARRAY[one_user], covered, snapshot, p_task_id, 'update_all') a;
                insights_processed := insights_processed + one_result.applied;
                rejected_insights := rejected_insights + one_result.rejected;
                stale_insights := stale_insights + one_result.stale;
                ignored_keys := ignored_keys + one_result.ignored;
                successful_updates := successful_updates + 1;
            EXCEPTION WHEN OTHERS THEN
                failed_updates := failed_updates + 1;
                failed_user_ids := failed_user_ids || one_user;
            END;
        END LOOP;
    END;

    -- Every user is covered by this snapshot now, unless one failed: then the global
    -- cursor stays, and the next run retries exactly what is still pending.
    IF failed_updates = 0 THEN
        UPDATE bondhu.pipeline_state SET
            applied_xmin = (snapshot).xmin_pos, applied_xmax = (snapshot).xmax_pos,
            applied_xip = (snapshot).xip_pos, advanced_at = now();
    END IF;
END $$;

CREATE OR REPLACE FUNCTION bondhu.position_added_insight() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.personality_insights IS NULL AND NEW.personality_insights IS NOT NULL THEN
        NEW.ingest_pos := bondhu.ingest_position();
    END IF;
    RETURN NEW;
END $$;

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

CREATE FUNCTION bondhu.before_drop_extension() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.cron_installed() THEN
        PERFORM set_config('bondhu.jobs_set_aside', bondhu.scheduled_jobs()::text, true);
        PERFORM cron.unschedule(j.jobid) FROM cron.job j JOIN bondhu.jobs() b ON b.jobname = j.jobname;
    END IF;
    PERFORM bondhu.detach_data_tables();
    PERFORM set_config('bondhu.tables_detached', 'on', true);
END $$;

CREATE FUNCTION bondhu.after_drop_extension() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    jobs jsonb := nullif(current_setting('bondhu.jobs_set_aside', true), '')::jsonb;
BEGIN
    IF current_setting('bondhu.tables_detached', true) = 'on' THEN
        PERFORM bondhu.attach_data_tables(false);
    END IF;
    PERFORM set_config('bondhu.tables_detached', '', true);
    PERFORM set_config('bondhu.jobs_set_aside', '', true);
    IF jobs IS NOT NULL AND bondhu.cron_installed() THEN
        PERFORM cron.alter_job(cron.schedule(j ->> 'jobname', j ->> 'schedule', j ->> 'command'),
                               active => (j ->> 'active')::boolean)
        FROM jsonb_array_elements(jobs) j;
    END IF;
END $$;

CREATE OR REPLACE VIEW bondhu.insights AS
    SELECT c.user_id, 'chat'::text AS source, c.adjustments AS doc,
           coalesce(c."timestamp", c.created_at) AS observed_at, c.ingest_pos
    FROM public.chat_personality_insights c
    UNION ALL
    SELECT e.user_id, 'entertainment'::text, e.personality_insights,
           e.created_at, e.ingest_pos
    FROM public.entertainment_interactions e
    WHERE e.personality_insights IS NOT NULL;

CREATE EVENT TRIGGER bondhu_before_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION bondhu.before_drop_extension();
CREATE EVENT TRIGGER bondhu_after_drop_extension ON ddl_command_end
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION bondhu.after_drop_extension();

REVOKE ALL ON FUNCTION bondhu.data_tables(), bondhu.is_member(regclass), bondhu.attach_data_tables(boolean),
    bondhu.detach_data_tables(), bondhu.before_drop_extension(), bondhu.after_drop_extension() FROM PUBLIC;
SELECT bondhu.attach_data_tables(true);
