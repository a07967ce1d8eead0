-- bondhu: personality updates: self-service (one user) and runs (every user).

------------------------------------------------------------------------------------
-- Public API
------------------------------------------------------------------------------------
-- Has the user insights pending now (as a self-service update would see them)?
CREATE FUNCTION bondhu.has_pending(target uuid) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM bondhu.pending_sums(target, target, bondhu.global_cursor(), bondhu.current_cursor(),
                                                   ARRAY[target], '-infinity'))
$$;

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
        PERFORM bondhu.require_own_profile(target, 'bondhu_update_personality');
    END IF;

    IF NOT operator AND NOT bondhu.has_pending(target) THEN
        -- The rate limit counts what costs: a call that finds nothing pending uses no
        -- slot, and writes nothing (no lock, no transaction id).
        SELECT * INTO profile FROM public.user_personality_profiles p WHERE p.user_id = target;
        SELECT * INTO applied FROM bondhu.apply_pending(target, target, NULL, NULL, NULL, 'self_update') LIMIT 0;
    ELSE
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
    END IF;
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
        'rejected_by_reason', coalesce(applied.rejected_by_reason,
                                       '{"not_an_object": 0, "not_a_number": 0, "over_100": 0}'),
        'trait_changes', bondhu.trait_changes(traits, coalesce(applied.traits_after, traits)),
        'updated_at', CASE WHEN applied.insights_processed > 0 THEN now() ELSE profile.updated_at END);
END $$;
-- Errors reach the server log: the caller gets each error's SQLSTATE, message and hint,
-- and its detail only from bondhu's own refusals; Postgres's details and contexts can
-- quote a row (a user id, trait values) or the JWT.
CREATE FUNCTION public.bondhu_update_personality(user_id uuid) RETURNS jsonb
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
COMMENT ON FUNCTION public.bondhu_update_personality(uuid) IS
    'Applies this user''s pending insights to their profile, each exactly once. A signed-in user may update only their own profile, once per self_update_min_interval; operators any.';

------------------------------------------------------------------------------------
-- Update runs: every user with pending insights (the life of a run: run_log.sql)
------------------------------------------------------------------------------------
-- Starts an update run (or logs a skipped one): the global cursor it starts from, the
-- snapshot it applies up to, and the settings it applies with go into its row.
CREATE FUNCTION bondhu.start_update_run() RETURNS bondhu.task_runs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs := bondhu.start_run('personality_update');
    run_snapshot bondhu.cursor;
BEGIN
    IF run.status = 'running' THEN
        -- the snapshot first: it resolves the incarnation, which may start the state
        run_snapshot := bondhu.current_cursor();
        UPDATE bondhu.task_runs t SET covered = bondhu.global_cursor(), snapshot = run_snapshot,
            metadata = (SELECT jsonb_build_object('settings', jsonb_build_object(
                            'dampening', s.dampening,
                            'insight_window_seconds', extract(epoch FROM s.insight_window)::bigint))
                        FROM bondhu.settings s)
        WHERE t.id = run.id
        RETURNING * INTO run;
    END IF;
    RETURN run;
END $$;

-- The first user after `after` (NULL: from the start) in key order with an insight
-- pending between the two cursors: one step along each table's <table>_user_pos index.
-- It reads the tables, not bondhu.insights: a UNION ALL branch with a WHERE clause (the
-- entertainment one) cannot be read in index order through the view.
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
           AND e.personality_insights IS NOT NULL AND e.personality_insights <> 'null'::jsonb
           AND bondhu.position_pending(e.ingest_pos, covered, snapshot)
         ORDER BY e.user_id LIMIT 1))
$$;

-- The next batch_size users after the run's last one, in key order, with insights
-- pending in the run (all of them when batch_size is NULL).
CREATE FUNCTION bondhu.next_users(run bondhu.task_runs, batch_size integer) RETURNS uuid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN batch_size IS NULL THEN
        -- all of them: one pass over the pending insights
        ARRAY(SELECT DISTINCT i.user_id
              FROM bondhu.insights i
              WHERE (run.resume_after IS NULL OR i.user_id > run.resume_after)
                AND bondhu.position_pending(i.ingest_pos, run.covered, run.snapshot)
              ORDER BY i.user_id)
    ELSE
        -- batch_size of them: one step along the <table>_user_pos indexes per user (a
        -- skip scan), so that a batch reads only its own users' insights
        ARRAY(WITH RECURSIVE next_user(user_id, n) AS (
                  SELECT bondhu.next_pending_user(run.resume_after, run.covered, run.snapshot), 1
                  UNION ALL
                  SELECT bondhu.next_pending_user(u.user_id, run.covered, run.snapshot), u.n + 1
                  FROM next_user u
                  WHERE u.user_id IS NOT NULL AND u.n < batch_size)
              SELECT u.user_id FROM next_user u WHERE u.user_id IS NOT NULL ORDER BY u.n)
    END
$$;

-- Applies the run's pending insights of the users from first_user to last_user, and
-- returns what it did as a run's counts (record_step).
CREATE FUNCTION bondhu.apply_counts(run bondhu.task_runs, first_user uuid, last_user uuid) RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('users', count(*), 'succeeded', count(*),
                              'records', coalesce(sum(a.insights_processed), 0),
                              'insights_processed', coalesce(sum(a.insights_processed), 0),
                              'rejected_insights', coalesce(sum(a.rejected_insights), 0),
                              'stale_insights', coalesce(sum(a.stale_insights), 0),
                              'ignored_keys', coalesce(sum(a.ignored_keys), 0),
                              'rejected_by_reason', jsonb_build_object(
                                  'not_an_object', coalesce(sum((a.rejected_by_reason ->> 'not_an_object')::integer), 0),
                                  'not_a_number', coalesce(sum((a.rejected_by_reason ->> 'not_a_number')::integer), 0),
                                  'over_100', coalesce(sum((a.rejected_by_reason ->> 'over_100')::integer), 0)))
    FROM bondhu.apply_pending(first_user, last_user, run.covered, run.snapshot, run.id, 'update_all') a
$$;

-- Applies the batch's users one by one, once the batch's set-based statement failed: a
-- user that fails keeps their insights pending and is counted, with their error's
-- SQLSTATE and message ('errors': the number of users per distinct error, at most 20
-- errors; 'failed_user_ids': the run's first 100). Ten users failing with the same
-- error, in a row or before any user succeeded, is a systematic failure (a broken
-- trigger or constraint, a missing privilege, a full disk): it fails the run, and the
-- rest stay pending.
CREATE FUNCTION bondhu.apply_one_by_one(run bondhu.task_runs, batch uuid[]) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    counts jsonb := '{}';
    one_user uuid;
    error_state text;
    error_text text;
    error_key text;
    last_error_key text;
    in_a_row integer := 0;
    error_kinds integer := (SELECT count(*) FROM jsonb_object_keys(coalesce(run.metadata -> 'errors', '{}')));
BEGIN
    FOREACH one_user IN ARRAY batch LOOP
        BEGIN
            counts := bondhu.add_counts(counts, bondhu.apply_counts(run, one_user, one_user));
            in_a_row := 0;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error_text = MESSAGE_TEXT;
            error_key := error_state || ': ' || error_text;
            IF NOT (coalesce(run.metadata -> 'errors', '{}') || coalesce(counts -> 'errors', '{}')) ? error_key THEN
                error_kinds := error_kinds + 1;
                IF error_kinds > 20 THEN
                    error_key := 'other errors';
                END IF;
            END IF;
            in_a_row := CASE WHEN error_key = last_error_key THEN in_a_row + 1 ELSE 1 END;
            last_error_key := error_key;
            counts := bondhu.add_counts(counts, jsonb_build_object(
                'users', 1, 'failed', 1, 'errors', jsonb_build_object(error_key, 1),
                'failed_user_ids', CASE WHEN run.failed_updates + coalesce((counts ->> 'failed')::integer, 0) < 100
                                        THEN jsonb_build_array(one_user) ELSE '[]' END));
            IF NOT counts ? 'error' THEN
                counts := counts || jsonb_build_object('error', jsonb_build_object('sqlstate', error_state, 'message', error_text));
            END IF;
            IF in_a_row = 10
               OR (run.successful_updates + coalesce((counts ->> 'succeeded')::integer, 0) = 0
                   AND coalesce((run.metadata #>> ARRAY['errors', error_key])::integer, 0)
                       + (counts #>> ARRAY['errors', error_key])::integer >= 10) THEN
                RETURN counts || jsonb_build_object('systematic_failure', jsonb_build_object(
                    'sqlstate', error_state,
                    'message', format('systematic failure: 10 users failed with the same error: %s', error_text)));
            END IF;
        END;
    END LOOP;
    RETURN counts;
END $$;

-- An update run's step: applies the pending insights of the run's next batch_size users
-- in key order (all of them when batch_size is NULL) and adds the counts to the run's
-- row. Returns whether users may be left. When the batch's set-based statement fails,
-- its users are redone one by one (apply_one_by_one).
CREATE FUNCTION bondhu.apply_update_batch(run bondhu.task_runs, batch_size integer) RETURNS boolean
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    batch uuid[] := bondhu.next_users(run, batch_size);
    counts jsonb;
BEGIN
    IF cardinality(batch) = 0 THEN
        PERFORM bondhu.record_step(run.id, '{}', true);
        RETURN false;
    END IF;
    INSERT INTO public.user_personality_profiles (user_id)
    SELECT unnest(batch) ON CONFLICT (user_id) DO NOTHING;
    -- Lock in key order (no deadlock with another locker of several profiles); a
    -- self-service update holding one of them is waited for, then seen.
    PERFORM FROM public.user_personality_profiles p
    WHERE p.user_id = ANY (batch) ORDER BY p.user_id FOR UPDATE OF p;
    -- A profile deleted while the lock waited is created again (its user starts at 50
    -- with what is pending); one deleted again meanwhile fails the step, and the run:
    -- the global cursor stays, and the next run applies what is pending.
    INSERT INTO public.user_personality_profiles (user_id)
    SELECT unnest(batch) ON CONFLICT (user_id) DO NOTHING;
    IF (SELECT count(*) FROM (SELECT FROM public.user_personality_profiles p
                              WHERE p.user_id = ANY (batch) ORDER BY p.user_id FOR UPDATE OF p) l)
       < cardinality(batch) THEN
        RAISE EXCEPTION 'bondhu: profiles were deleted during the run, twice'
            USING ERRCODE = 'serialization_failure';
    END IF;
    BEGIN
        counts := bondhu.apply_counts(run, batch[1], batch[cardinality(batch)]);
    EXCEPTION WHEN OTHERS THEN
        counts := bondhu.apply_one_by_one(run, batch);
    END;
    PERFORM bondhu.record_step(run.id, counts - 'systematic_failure', batch_size IS NULL, resume_after => batch[cardinality(batch)]);
    IF counts ? 'systematic_failure' THEN
        PERFORM bondhu.fail_run(run.id, counts #>> '{systematic_failure,sqlstate}',
                                counts #>> '{systematic_failure,message}');
        RETURN false;
    END IF;
    RETURN batch_size IS NOT NULL;
END $$;

-- Updates every user with pending insights, in one transaction. Never overlaps another
-- run: a call while one runs returns status 'skipped'. Each call leaves one row in
-- system_tasks; a run that did not complete also logs a WARNING.
CREATE FUNCTION public.bondhu_update_all() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT bondhu.run_at_once(bondhu.start_update_run())
$$;
COMMENT ON FUNCTION public.bondhu_update_all() IS
    'Applies every user''s pending insights, each exactly once, in one transaction; logs the run in system_tasks.';

-- The same, committing after every batch of users: for pg_cron and large databases. A
-- self-service update waits for one batch at most. A run that did not complete ends
-- the CALL with an error (after its row is committed), so pg_cron records a failure.
CREATE PROCEDURE public.bondhu_run_update_all(batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'bondhu_run_update_all: batch_size must be a positive number of users'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM bondhu.refuse_transaction_block('bondhu_run_update_all', 'SELECT bondhu_update_all()');
    CALL bondhu.run_in_steps(bondhu.start_update_run(), batch_size::text);
END $$;
COMMENT ON PROCEDURE public.bondhu_run_update_all(integer) IS
    'Applies every user''s pending insights, each exactly once, committing every batch_size users; logs the run in system_tasks.';
