-- bondhu 0.1.0 -> 0.2.0
-- The application's tables are adopted when they exist and detached on DROP EXTENSION
-- (their data is never dropped); updates run in batches from pg_cron
-- (bondhu_run_update_all, bondhu_run_cleanup), and a run whose session died is marked
-- interrupted; insight
-- documents are checked in Rust; a NULL trait of an adopted profile starts at 50; a chat
-- insight without "timestamp" is dated by created_at.
\echo Use "ALTER EXTENSION bondhu UPDATE TO '0.2.0'" to load this file. \quit

DROP EVENT TRIGGER bondhu_set_jobs_aside;
DROP EVENT TRIGGER bondhu_put_jobs_back;

DROP FUNCTION bondhu.trait_adjustment(jsonb);

DROP FUNCTION bondhu.apply_all_pending(uuid);

DROP FUNCTION bondhu.set_jobs_aside();

DROP FUNCTION bondhu.put_jobs_back();

DROP FUNCTION bondhu.unknown_key_count(jsonb);

ALTER INDEX public.chat_personality_insights_timestamp_brin RENAME TO chat_personality_insights_observed_brin;
ALTER INDEX public.entertainment_interactions_created_brin RENAME TO entertainment_interactions_observed_brin;

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

DROP FUNCTION bondhu.insight_adjustments(jsonb);

CREATE OR REPLACE FUNCTION bondhu.adjusted_trait(current double precision, total numeric, dampening numeric)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(100, greatest(0, coalesce(current, 50)::numeric + dampening * total))::double precision
$$;

CREATE FUNCTION bondhu.position_pending(pos bigint, covered bondhu.cursor, snapshot bondhu.cursor)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pos >= (covered).xmin_pos
       AND NOT bondhu.position_applied(pos, (covered).xmin_pos, (covered).xmax_pos, (covered).xip_pos)
       AND bondhu.position_applied(pos, (snapshot).xmin_pos, (snapshot).xmax_pos, (snapshot).xip_pos)
$$;

CREATE FUNCTION bondhu.cursor_within(xmin_pos bigint, xmax_pos bigint, xip_pos bigint[], outer_cursor bondhu.cursor)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT xmin_pos IS NULL
        OR xmax_pos <= (outer_cursor).xmin_pos
        OR (xmin_pos = (outer_cursor).xmin_pos AND xmax_pos = (outer_cursor).xmax_pos
            AND xip_pos = (outer_cursor).xip_pos)
$$;

CREATE  FUNCTION bondhu."insight_totals_step"(
	"state" internal, /* Internal */
	"doc" anyelement, /* Option < AnyElement > */
	"fresh" bool, /* Option < bool > */
	"from_chat" bool /* Option < bool > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'insight_totals_step_wrapper';

CREATE  FUNCTION bondhu."insight_counts_final"(
	"state" internal /* Internal */
) RETURNS INT[] /* :: std :: option :: Option < Vec < i32 > > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'insight_counts_final_wrapper';

CREATE  FUNCTION bondhu."insight_sums_final"(
	"state" internal /* Internal */
) RETURNS NUMERIC[] /* :: std :: option :: Option < Vec < AnyNumeric > > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'insight_sums_final_wrapper';

CREATE AGGREGATE bondhu.insight_counts(doc jsonb, fresh boolean, from_chat boolean) (
    SFUNC = bondhu.insight_totals_step, STYPE = internal, SSPACE = 256,
    FINALFUNC = bondhu.insight_counts_final
);

CREATE AGGREGATE bondhu.insight_sums(doc jsonb, fresh boolean, from_chat boolean) (
    SFUNC = bondhu.insight_totals_step, STYPE = internal, SSPACE = 256,
    FINALFUNC = bondhu.insight_sums_final
);

DROP FUNCTION bondhu.apply_pending(uuid[], bondhu.cursor, bondhu.cursor, uuid, text);

CREATE FUNCTION bondhu.apply_pending(p_first uuid, p_last uuid, p_global bondhu.cursor, p_new bondhu.cursor,
                                     p_task_id uuid, p_trigger text)
RETURNS TABLE (user_id uuid, insights_processed integer, chat_insights integer,
               entertainment_insights integer, rejected_insights integer, stale_insights integer,
               ignored_keys integer, traits_before double precision[], traits_after double precision[])
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg bondhu.settings;
    ahead uuid[];
BEGIN
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    -- Users whose profile a self-service update has moved past the global cursor: only
    -- their insights are checked against the profile's own cursor, so that the others
    -- are aggregated without a join.
    ahead := ARRAY(SELECT p.user_id FROM public.user_personality_profiles p
                   WHERE p.user_id BETWEEN p_first AND p_last
                     AND NOT bondhu.cursor_within(p.applied_xmin, p.applied_xmax, p.applied_xip, p_global));
    RETURN QUERY
    WITH pending AS (
        SELECT i.user_id, i.source, i.doc, i.observed_at
        FROM bondhu.insights i
        WHERE bondhu.position_pending(i.ingest_pos, p_global, p_new)
          AND i.user_id BETWEEN p_first AND p_last
          AND i.user_id <> ALL (ahead)
        UNION ALL
        SELECT i.user_id, i.source, i.doc, i.observed_at
        FROM bondhu.insights i
        JOIN public.user_personality_profiles p ON p.user_id = i.user_id
        WHERE bondhu.position_pending(i.ingest_pos, p_global, p_new)
          AND i.user_id = ANY (ahead)
          AND NOT coalesce(bondhu.position_applied(i.ingest_pos, p.applied_xmin, p.applied_xmax, p.applied_xip), false)
    ), sums AS (
        SELECT pending.user_id,
               bondhu.insight_counts(pending.doc, pending.observed_at >= now() - cfg.insight_window,
                                     pending.source = 'chat') AS n,
               bondhu.insight_sums(pending.doc, pending.observed_at >= now() - cfg.insight_window,
                                   pending.source = 'chat') AS d
        FROM pending
        GROUP BY pending.user_id
    ), totals AS (
        -- the profile's values, read here: the caller holds its lock, so they are the
        -- values the update replaces
        SELECT s.user_id, s.n, s.d, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism
        FROM sums s
        JOIN public.user_personality_profiles p ON p.user_id = s.user_id
    ), updated AS (
        UPDATE public.user_personality_profiles p SET
            openness = bondhu.adjusted_trait(p.openness, t.d[1], cfg.dampening),
            conscientiousness = bondhu.adjusted_trait(p.conscientiousness, t.d[2], cfg.dampening),
            extraversion = bondhu.adjusted_trait(p.extraversion, t.d[3], cfg.dampening),
            agreeableness = bondhu.adjusted_trait(p.agreeableness, t.d[4], cfg.dampening),
            neuroticism = bondhu.adjusted_trait(p.neuroticism, t.d[5], cfg.dampening),
            updated_at = CASE WHEN t.n[1] > 0 THEN now() ELSE p.updated_at END,
            applied_xmin = (p_new).xmin_pos,
            applied_xmax = (p_new).xmax_pos,
            applied_xip = (p_new).xip_pos
        FROM totals t
        WHERE p.user_id = t.user_id
        RETURNING p.user_id, t.n[1] AS applied, t.n[2] AS chat, t.n[3] AS entertainment, t.n[4] AS rejected,
                  t.n[5] AS stale, t.n[6] AS ignored,
                  -- a trait without a value (an adopted profile) was 50, as adjusted_trait counts it
                  ARRAY[coalesce(t.openness, 50), coalesce(t.conscientiousness, 50), coalesce(t.extraversion, 50),
                        coalesce(t.agreeableness, 50), coalesce(t.neuroticism, 50)] AS before,
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

COMMENT ON FUNCTION public.bondhu_update_personality(uuid) IS
    'Applies this user''s pending insights to their profile, each exactly once. A signed-in user may update only their own profile, once per self_update_min_interval; operators any.';

CREATE FUNCTION bondhu.mark_interrupted_runs(task text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE bondhu.task_runs
    SET status = 'failed', finished_at = clock_timestamp(),
        error_message = 'interrupted: the session running it ended before the run finished'
    WHERE status = 'running' AND task_name = task
$$;

CREATE FUNCTION bondhu.start_update_run(session_lock boolean,
    OUT run bondhu.task_runs, OUT covered bondhu.cursor, OUT snapshot bondhu.cursor)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    locked boolean := CASE WHEN session_lock THEN pg_try_advisory_lock(bondhu.lock_key('personality_update'))
                           ELSE pg_try_advisory_xact_lock(bondhu.lock_key('personality_update')) END;
BEGIN
    IF NOT locked THEN
        INSERT INTO bondhu.task_runs (task_name, status, finished_at, duration_seconds, error_message)
        VALUES ('personality_update', 'skipped', clock_timestamp(), 0, 'another personality update was running')
        RETURNING * INTO run;
        RETURN;
    END IF;
    PERFORM bondhu.mark_interrupted_runs('personality_update');
    INSERT INTO bondhu.task_runs (task_name, status) VALUES ('personality_update', 'running') RETURNING * INTO run;
    snapshot := bondhu.current_cursor();
    covered := bondhu.global_cursor();
END $$;

CREATE FUNCTION bondhu.next_pending_user(after uuid, covered bondhu.cursor, snapshot bondhu.cursor)
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
           AND e.personality_insights IS NOT NULL
           AND bondhu.position_pending(e.ingest_pos, covered, snapshot)
         ORDER BY e.user_id LIMIT 1))
$$;

CREATE FUNCTION bondhu.apply_update_batch(run_id uuid, covered bondhu.cursor, snapshot bondhu.cursor,
                                          after_user uuid, batch_size integer) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET plan_cache_mode = force_custom_plan
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    batch uuid[];
    one_user uuid;
    totals record;
    one record;
    failed uuid[] := '{}';
    first_error text;
    error_state text;
BEGIN
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
        RETURN NULL;
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
                'failed_user_ids', coalesce(t.metadata -> 'failed_user_ids', '[]') || to_jsonb(failed))
        WHERE t.id = run_id;
    EXCEPTION WHEN OTHERS THEN
        -- The batch's own work is rolled back; the failure is logged.
        GET STACKED DIAGNOSTICS first_error = MESSAGE_TEXT, error_state = RETURNED_SQLSTATE;
        UPDATE bondhu.task_runs t SET status = 'failed', error_message = first_error,
            metadata = t.metadata || jsonb_build_object('sqlstate', error_state)
        WHERE t.id = run_id;
        RETURN NULL;
    END;
    RETURN batch[cardinality(batch)];
END $$;

CREATE FUNCTION bondhu.finish_update_run(run_id uuid, snapshot bondhu.cursor, session_lock boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs;
BEGIN
    UPDATE bondhu.task_runs t SET
        status = CASE WHEN t.status = 'failed' THEN 'failed'
                      WHEN t.failed_updates > 0 THEN 'completed_with_errors' ELSE 'completed' END,
        finished_at = clock_timestamp(),
        duration_seconds = round(extract(epoch FROM clock_timestamp() - t.executed_at)::numeric, 3)
    WHERE t.id = run_id
    RETURNING * INTO run;
    IF run.status = 'completed' THEN
        UPDATE bondhu.pipeline_state SET
            applied_xmin = (snapshot).xmin_pos, applied_xmax = (snapshot).xmax_pos,
            applied_xip = (snapshot).xip_pos, advanced_at = now();
    END IF;
    IF session_lock THEN
        PERFORM pg_advisory_unlock(bondhu.lock_key('personality_update'));
    END IF;
    RETURN bondhu.run_summary(run);
END $$;

CREATE FUNCTION bondhu.run_summary(run bondhu.task_runs) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'task_id', run.id, 'status', run.status,
        'users_processed', run.users_processed, 'successful_updates', run.successful_updates,
        'failed_updates', run.failed_updates,
        'insights_processed', coalesce((run.metadata ->> 'insights_processed')::bigint, 0),
        'rejected_insights', coalesce((run.metadata ->> 'rejected_insights')::bigint, 0),
        'stale_insights', coalesce((run.metadata ->> 'stale_insights')::bigint, 0),
        'duration_seconds', coalesce(run.duration_seconds, 0),
        'error_message', run.error_message)
$$;

CREATE OR REPLACE FUNCTION public.bondhu_update_all() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    started record;
BEGIN
    SELECT * INTO STRICT started FROM bondhu.start_update_run(false);
    IF (started.run).status = 'skipped' THEN
        RETURN bondhu.run_summary(started.run);
    END IF;
    PERFORM bondhu.apply_update_batch((started.run).id, started.covered, started.snapshot, NULL, NULL);
    RETURN bondhu.finish_update_run((started.run).id, started.snapshot, false);
END $$;

COMMENT ON FUNCTION public.bondhu_update_all() IS
    'Applies every user''s pending insights, each exactly once, in one transaction; logs the run in system_tasks.';

CREATE PROCEDURE public.bondhu_run_update_all(batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
DECLARE
    started record;
    last_user uuid;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'bondhu_run_update_all: batch_size must be a positive number of users'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO STRICT started FROM bondhu.start_update_run(true);
    IF (started.run).status = 'skipped' THEN
        RETURN;
    END IF;
    COMMIT;
    LOOP
        last_user := bondhu.apply_update_batch((started.run).id, started.covered, started.snapshot, last_user, batch_size);
        COMMIT;
        EXIT WHEN last_user IS NULL;
    END LOOP;
    PERFORM bondhu.finish_update_run((started.run).id, started.snapshot, true);
    COMMIT;
END $$;

COMMENT ON PROCEDURE public.bondhu_run_update_all(integer) IS
    'Applies every user''s pending insights, each exactly once, committing every batch_size users; logs the run in system_tasks.';

CREATE FUNCTION bondhu.start_cleanup_run(older_than interval, session_lock boolean,
    OUT run bondhu.task_runs, OUT cutoff timestamptz, OUT oldest timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    window_length interval := (SELECT s.insight_window FROM bondhu.settings s);
    locked boolean;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF older_than <= interval '0' THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than must be a positive interval, got %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF older_than < window_length THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than (%) is shorter than the insight window (%)', older_than, window_length
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Insights inside the window may not be applied yet; deleting them would lose them.',
                  HINT = 'Use an interval of at least bondhu.settings.insight_window.';
    END IF;
    cutoff := now() - older_than;
    locked := CASE WHEN session_lock THEN pg_try_advisory_lock(bondhu.lock_key('insights_cleanup'))
                   ELSE pg_try_advisory_xact_lock(bondhu.lock_key('insights_cleanup')) END;
    IF NOT locked THEN
        INSERT INTO bondhu.task_runs (task_name, status, finished_at, duration_seconds, error_message)
        VALUES ('insights_cleanup', 'skipped', clock_timestamp(), 0, 'another cleanup was running')
        RETURNING * INTO run;
        RETURN;
    END IF;
    PERFORM bondhu.mark_interrupted_runs('insights_cleanup');
    INSERT INTO bondhu.task_runs (task_name, status, metadata)
    VALUES ('insights_cleanup', 'running', jsonb_build_object(
        'older_than', older_than, 'cutoff', cutoff, 'chat_insights_deleted', 0, 'entertainment_insights_cleared', 0))
    RETURNING * INTO run;
    oldest := least((SELECT min(c."timestamp") FROM public.chat_personality_insights c WHERE c."timestamp" < cutoff),
                    (SELECT min(e.created_at) FROM public.entertainment_interactions e
                     WHERE e.created_at < cutoff AND e.personality_insights IS NOT NULL));
END $$;

CREATE FUNCTION bondhu.cleanup_slice(run_id uuid, from_time timestamptz, to_time timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    chat_deleted bigint;
    entertainment_cleared bigint;
    error_text text;
    error_state text;
BEGIN
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
            'entertainment_insights_cleared', (t.metadata ->> 'entertainment_insights_cleared')::bigint + entertainment_cleared)
    WHERE t.id = run_id;
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_text = MESSAGE_TEXT, error_state = RETURNED_SQLSTATE;
    UPDATE bondhu.task_runs t SET status = 'failed', error_message = error_text,
        metadata = t.metadata || jsonb_build_object('sqlstate', error_state)
    WHERE t.id = run_id;
    RETURN false;
END $$;

CREATE FUNCTION bondhu.finish_cleanup_run(run_id uuid, session_lock boolean) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    log_pruned bigint;
    run bondhu.task_runs;
BEGIN
    DELETE FROM bondhu.task_runs t
    WHERE t.executed_at < now() - (SELECT s.run_log_retention FROM bondhu.settings s) AND t.id <> run_id;
    GET DIAGNOSTICS log_pruned = ROW_COUNT;
    UPDATE bondhu.task_runs t SET
        status = CASE WHEN t.status = 'failed' THEN 'failed' ELSE 'completed' END,
        finished_at = clock_timestamp(),
        duration_seconds = round(extract(epoch FROM clock_timestamp() - t.executed_at)::numeric, 3),
        metadata = t.metadata || jsonb_build_object('run_log_rows_pruned', log_pruned)
    WHERE t.id = run_id
    RETURNING * INTO run;
    IF session_lock THEN
        PERFORM pg_advisory_unlock(bondhu.lock_key('insights_cleanup'));
    END IF;
    RETURN bondhu.cleanup_summary(run);
END $$;

CREATE FUNCTION bondhu.cleanup_summary(run bondhu.task_runs) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('task_id', run.id, 'status', run.status,
        'records_processed', run.records_processed,
        'chat_insights_deleted', coalesce((run.metadata ->> 'chat_insights_deleted')::bigint, 0),
        'entertainment_insights_cleared', coalesce((run.metadata ->> 'entertainment_insights_cleared')::bigint, 0),
        'error_message', run.error_message)
$$;

CREATE OR REPLACE FUNCTION public.bondhu_cleanup_insights(older_than interval DEFAULT '90 days') RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    started record;
BEGIN
    SELECT * INTO STRICT started FROM bondhu.start_cleanup_run(older_than, false);
    IF (started.run).status = 'skipped' THEN
        RETURN bondhu.cleanup_summary(started.run);
    END IF;
    PERFORM bondhu.cleanup_slice((started.run).id, NULL, started.cutoff);
    RETURN bondhu.finish_cleanup_run((started.run).id, false);
END $$;

COMMENT ON FUNCTION public.bondhu_cleanup_insights(interval) IS
    'Deletes chat insights and clears entertainment insights older than older_than (at least the insight window), in one transaction.';

CREATE PROCEDURE public.bondhu_run_cleanup(slice_length interval DEFAULT '1 day')
LANGUAGE plpgsql AS $$
DECLARE
    started record;
    slice_start timestamptz;
BEGIN
    IF slice_length IS NULL OR slice_length <= interval '0' THEN
        RAISE EXCEPTION 'bondhu_run_cleanup: slice_length must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO STRICT started
    FROM bondhu.start_cleanup_run((SELECT s.insight_retention FROM bondhu.settings s), true);
    IF (started.run).status = 'skipped' THEN
        RETURN;
    END IF;
    COMMIT;
    slice_start := started.oldest;
    WHILE slice_start < started.cutoff LOOP
        EXIT WHEN NOT bondhu.cleanup_slice((started.run).id, slice_start, least(slice_start + slice_length, started.cutoff));
        COMMIT;
        slice_start := slice_start + slice_length;
    END LOOP;
    PERFORM bondhu.finish_cleanup_run((started.run).id, true);
    COMMIT;
END $$;

COMMENT ON PROCEDURE public.bondhu_run_cleanup(interval) IS
    'Cleans up insights older than the insight_retention setting, committing after every slice_length of them; logs the run in system_tasks.';


CREATE OR REPLACE FUNCTION bondhu.jobs() RETURNS TABLE (id text, jobname text, default_schedule text, command text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('personality_update', 'bondhu_personality_update', '0 2 * * *',
            'CALL public.bondhu_run_update_all()'),
           ('insights_cleanup', 'bondhu_insights_cleanup', '0 3 * * 0',
            'CALL public.bondhu_run_cleanup()')
$$;

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
    job_problems text[];
    last_update bondhu.task_runs;
    last_success bondhu.task_runs;
    last_cleanup bondhu.task_runs;
    update_schedule text;
    missed_since timestamptz;
    status text;
    task text;
BEGIN
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    -- Runs left 'running' by a session that died: no run of their task holds its lock.
    FOREACH task IN ARRAY ARRAY['personality_update', 'insights_cleanup'] LOOP
        IF pg_try_advisory_lock(bondhu.lock_key(task)) THEN
            PERFORM bondhu.mark_interrupted_runs(task);
            PERFORM pg_advisory_unlock(bondhu.lock_key(task));
        END IF;
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
                   'trigger', CASE WHEN j.jobid IS NULL THEN NULL ELSE 'cron[' || j.schedule || '] GMT' END,
                   'active', coalesce(j.active, false),
                   'next_run_time', CASE WHEN j.active THEN bondhu.cron_next_run(j.schedule, now()) END,
                   'last_run', (SELECT jsonb_build_object('status', d.status, 'start_time', d.start_time,
                                                          'end_time', d.end_time, 'message', d.return_message)
                                FROM cron.job_run_details d WHERE d.jobid = j.jobid
                                ORDER BY d.runid DESC LIMIT 1)) ORDER BY b.id DESC), '[]'),
               max(j.schedule) FILTER (WHERE b.id = 'personality_update'),
               array_agg(b.jobname || CASE WHEN j.jobid IS NULL THEN ' is not scheduled (call bondhu_schedule())'
                                           ELSE ' is not active' END)
                   FILTER (WHERE j.jobid IS NULL OR NOT j.active)
        INTO jobs, update_schedule, job_problems
        FROM bondhu.jobs() b LEFT JOIN cron.job j ON j.jobname = b.jobname;
        problems := problems || coalesce(job_problems, '{}');
    END IF;

    IF update_schedule IS NOT NULL AND last_success.executed_at IS NOT NULL THEN
        missed_since := bondhu.cron_next_run(update_schedule, last_success.executed_at);
    END IF;
    status := CASE
        WHEN cardinality(problems) > 0 OR last_update.status = 'failed' THEN 'unhealthy'
        WHEN missed_since + interval '1 hour' < now() OR last_update.status = 'completed_with_errors' THEN 'degraded'
        ELSE 'healthy' END;

    RETURN jsonb_build_object(
        'status', status,
        'scheduler_running', cardinality(problems) = 0,
        'problems', to_jsonb(problems),
        'timezone', 'GMT (pg_cron 1.4 evaluates schedules in GMT; for 2 AM local time, shift the hour by the UTC offset)',
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

COMMENT ON FUNCTION public.bondhu_system_health() IS
    'Scheduler state, jobs with next and last runs, the last update and cleanup, and an overall status.';

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


CREATE EVENT TRIGGER bondhu_before_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION bondhu.before_drop_extension();
CREATE EVENT TRIGGER bondhu_after_drop_extension ON ddl_command_end
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION bondhu.after_drop_extension();

CREATE OR REPLACE VIEW bondhu.insights AS
    SELECT c.user_id, 'chat'::text AS source, c.adjustments AS doc,
           coalesce(c."timestamp", c.created_at) AS observed_at, c.ingest_pos
    FROM public.chat_personality_insights c
    UNION ALL
    SELECT e.user_id, 'entertainment'::text, e.personality_insights,
           e.created_at, e.ingest_pos
    FROM public.entertainment_interactions e
    WHERE e.personality_insights IS NOT NULL;

-- Privileges, as a fresh install leaves them.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA bondhu FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA bondhu FROM PUBLIC;
REVOKE ALL ON FUNCTION public.bondhu_update_personality(uuid), public.bondhu_update_all(),
    public.bondhu_cleanup_insights(interval), public.bondhu_schedule(text, text),
    public.bondhu_unschedule(), public.bondhu_system_health() FROM PUBLIC;
REVOKE ALL ON PROCEDURE public.bondhu_run_update_all(integer), public.bondhu_run_cleanup(interval) FROM PUBLIC;
REVOKE ALL ON public.chat_personality_insights, public.entertainment_interactions,
    public.user_personality_profiles, public.personality_profile_history, public.system_tasks FROM PUBLIC;

-- Whoever may insert an insight runs its ingest_pos default.
GRANT USAGE ON SCHEMA bondhu TO PUBLIC;
GRANT EXECUTE ON FUNCTION bondhu.ingest_position(), bondhu.resolve_incarnation() TO PUBLIC;

GRANT EXECUTE ON FUNCTION public.bondhu_update_personality(uuid), public.bondhu_update_all(),
    public.bondhu_cleanup_insights(interval), public.bondhu_schedule(text, text),
    public.bondhu_unschedule(), public.bondhu_system_health() TO bondhu_operator;
GRANT EXECUTE ON PROCEDURE public.bondhu_run_update_all(integer), public.bondhu_run_cleanup(interval) TO bondhu_operator;
-- the procedures' steps (they cannot be SECURITY DEFINER, the steps are)
GRANT EXECUTE ON FUNCTION bondhu.start_update_run(boolean),
    bondhu.apply_update_batch(uuid, bondhu.cursor, bondhu.cursor, uuid, integer),
    bondhu.finish_update_run(uuid, bondhu.cursor, boolean),
    bondhu.start_cleanup_run(interval, boolean), bondhu.cleanup_slice(uuid, timestamptz, timestamptz),
    bondhu.finish_cleanup_run(uuid, boolean) TO bondhu_operator;
GRANT SELECT ON public.system_tasks, bondhu.settings, bondhu.pipeline_state, bondhu.task_runs TO bondhu_operator;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.chat_personality_insights, public.entertainment_interactions,
    public.user_personality_profiles, public.personality_profile_history TO bondhu_operator;

-- Supabase's roles, where they exist. Supabase's default privileges grant new objects in
-- public to anon and authenticated: take that back, then grant what the contract says.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON FUNCTION public.bondhu_update_personality(uuid), public.bondhu_update_all(),
            public.bondhu_cleanup_insights(interval), public.bondhu_schedule(text, text),
            public.bondhu_unschedule(), public.bondhu_system_health() FROM anon;
        REVOKE ALL ON PROCEDURE public.bondhu_run_update_all(integer), public.bondhu_run_cleanup(interval) FROM anon;
        REVOKE ALL ON public.chat_personality_insights, public.entertainment_interactions,
            public.user_personality_profiles, public.personality_profile_history, public.system_tasks FROM anon;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON FUNCTION public.bondhu_update_all(), public.bondhu_cleanup_insights(interval),
            public.bondhu_schedule(text, text), public.bondhu_unschedule(), public.bondhu_system_health()
            FROM authenticated;
        REVOKE ALL ON PROCEDURE public.bondhu_run_update_all(integer), public.bondhu_run_cleanup(interval) FROM authenticated;
        REVOKE ALL ON public.chat_personality_insights, public.entertainment_interactions,
            public.user_personality_profiles, public.personality_profile_history, public.system_tasks
            FROM authenticated;
        GRANT EXECUTE ON FUNCTION public.bondhu_update_personality(uuid) TO authenticated;
        GRANT SELECT ON public.chat_personality_insights, public.entertainment_interactions,
            public.user_personality_profiles, public.personality_profile_history TO authenticated;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        GRANT bondhu_operator TO service_role;
    END IF;
END $$;

-- The scheduled jobs run in batches now.
DO $$
BEGIN
    IF bondhu.cron_installed() THEN
        PERFORM cron.alter_job(j.jobid, command => b.command)
        FROM cron.job j JOIN bondhu.jobs() b ON b.jobname = j.jobname;
    END IF;
END $$;

SELECT bondhu.attach_data_tables(true);
