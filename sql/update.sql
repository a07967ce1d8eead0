-- bondhu: personality updates: self-service (one user) and runs (every user).

------------------------------------------------------------------------------------
-- Public API
------------------------------------------------------------------------------------
-- Has the user insights pending now (as a self-service update would see them), profile
-- or not (a user no run has seen yet has none)? It stops at the first pending insight:
-- summing them all first (EXISTS over pending_sums) made it 0.2-1.1 ms a call, most of
-- what a signed-in update costs more than an operator's. One generic plan for every
-- call, kept by plpgsql (see apply_user_pending). The cursors are variables: a volatile
-- argument (current_cursor()) keeps the planner from inlining pending_insights, which
-- then planned its statement at every call (~0.4 ms a call, ~0.14 ms now).
CREATE FUNCTION bondhu.has_pending(target uuid) RETURNS boolean
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    covered bondhu.cursor := bondhu.global_cursor();
    -- the profile's own cursor counts only when a self-service update moved it ahead
    ahead boolean := bondhu.moved_ahead(target, covered);
    snapshot bondhu.cursor := bondhu.current_cursor();
BEGIN
    RETURN EXISTS (SELECT FROM bondhu.pending_insights(target, covered, snapshot, ahead));
END $$;

-- The self-service update of bondhu_update_personality (below).
CREATE FUNCTION bondhu.update_personality(target uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg bondhu.settings;
    operator boolean;
    snapshot bondhu.cursor;
    retry_at timestamptz;
    profile public.user_personality_profiles;
    applied record;
    traits double precision[];
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'bondhu_update_personality: user_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    PERFORM bondhu.require_superuser_owned_tables();
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    operator := bondhu.caller_is_operator();
    IF NOT operator THEN
        PERFORM bondhu.require_own_profile(target, 'bondhu_update_personality');
    END IF;

    -- what a call that applies nothing returns (no row: every count 0)
    SELECT * INTO applied FROM bondhu.apply_user_pending(NULL, NULL, NULL, NULL, NULL) LIMIT 0;
    -- The rate limit counts what costs: a call that finds nothing pending uses no slot,
    -- and writes nothing (no lock, no transaction id); one that finds nothing left once
    -- it holds the lock (another call or a run applied it while it waited) uses no slot
    -- either, and is not refused.
    IF operator OR bondhu.has_pending(target) THEN
        -- created only when missing: an INSERT that finds the profile would still
        -- fire the table's BEFORE INSERT triggers (the application's too)
        SELECT * INTO profile FROM public.user_personality_profiles p WHERE p.user_id = target FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO public.user_personality_profiles AS p (user_id) VALUES (target)
            ON CONFLICT (user_id) DO NOTHING;
            SELECT * INTO profile FROM public.user_personality_profiles p WHERE p.user_id = target FOR UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'bondhu_update_personality: the profile could not be created and locked (deleted during the update, or skipped by a trigger)'
                    USING ERRCODE = 'serialization_failure';
            END IF;
        END IF;
        -- A signed-in call inside the rate limit's interval (read once, with cfg's
        -- interval) is refused (PT429) if anything is still pending, and otherwise
        -- applies nothing. Any other call applies; one that applied (or counted)
        -- anything uses the user's slot. The interval is of wall-clock time, not of
        -- transaction starts: a client that held its transaction open before calling
        -- would otherwise be measured from a moment in the past.
        retry_at := CASE WHEN NOT operator THEN bondhu.next_self_update_at(target, cfg.self_update_min_interval) END;
        IF retry_at > clock_timestamp() THEN
            IF bondhu.has_pending(target) THEN
                PERFORM bondhu.refuse_self_update(retry_at, cfg.self_update_min_interval);
            END IF;
        ELSE
            -- Taken after the lock: covers whatever the previous holder of the lock applied.
            snapshot := bondhu.current_cursor();
            SELECT * INTO applied
            FROM bondhu.apply_user_pending(target, bondhu.global_cursor(), snapshot,
                                           bondhu.moment_before(now(), cfg.insight_window),
                                           cfg.dampening);
            IF NOT operator AND applied.user_id IS NOT NULL THEN
                PERFORM bondhu.note_self_update(target);
            END IF;
        END IF;
    ELSE
        SELECT * INTO profile FROM public.user_personality_profiles p WHERE p.user_id = target;
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
    -- an option given as '' would still be sent (an empty HINT line): each is given
    -- only when it says something
    IF state IN ('PT429', '42501', '22004') AND detail <> '' THEN
        IF hint <> '' THEN
            RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint;
        END IF;
        RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail;
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
-- snapshot it applies up to, and the settings it applies with go into its row (the
-- insight window as written, in the postgres IntervalStyle: run_window_start reads it).
CREATE FUNCTION bondhu.start_update_run() RETURNS bondhu.task_runs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET IntervalStyle = postgres AS $$
DECLARE
    -- read before the run's start is logged: a longer window committed after this read
    -- is not the run's, and one committed before it was checked against cleanups at a
    -- moment before the run's start (settings_refuse_window_past_cleanup)
    cfg bondhu.settings := (SELECT s FROM bondhu.settings s);
    run bondhu.task_runs := bondhu.start_run('personality_update');
    run_snapshot bondhu.cursor;
BEGIN
    IF run.status = 'running' THEN
        -- the snapshot first: it resolves the incarnation, which may start the state
        run_snapshot := bondhu.current_cursor();
        UPDATE bondhu.task_runs t SET covered = bondhu.global_cursor(), snapshot = run_snapshot,
            metadata = jsonb_build_object('settings', jsonb_build_object(
                           'dampening', cfg.dampening, 'insight_window', cfg.insight_window::text))
        WHERE t.id = run.id
        RETURNING * INTO run;
    END IF;
    RETURN run;
END $$;

-- A run's totals, staged by its first step (stage_run_totals): each user's insights
-- pending between the run's cursors, summed in one pass over the insights, so that the
-- run's batches read their users' totals in key order instead of their insights
-- scattered over the tables; and the user's pending rows (insights, and interactions
-- not analysed yet), which a batch counts again to prove the totals still hold. A batch
-- uses a user's totals when the profile it locked has applied nothing the run's
-- `covered` cursor does not cover (no self-service update moved it ahead) and the
-- user's pending rows are still the ones staged; otherwise it computes them again from
-- the insights (apply_pending). UNLOGGED: what a crash loses is derived, and the run it
-- belonged to is over; the next run stages again.
CREATE UNLOGGED TABLE bondhu.run_totals (
    user_id uuid PRIMARY KEY,
    n integer[] NOT NULL,
    d numeric[] NOT NULL,
    pending_rows integer NOT NULL
);

-- Insights observed before this time are stale in the run: its start less the
-- insight_window it runs with, on UTC's calendar (moment_before: a month is a calendar
-- month, as for cleanup).
CREATE FUNCTION bondhu.run_window_start(run bondhu.task_runs) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp SET IntervalStyle = postgres AS $$
    SELECT bondhu.moment_before(run.executed_at, (run.metadata #>> '{settings,insight_window}')::interval)
$$;

-- Every user with insights pending between the run's cursors, with their totals and
-- their pending rows (bondhu.run_totals), in one pass over the rows. A query of its own
-- (RETURN QUERY) so that Postgres may sum the insights with parallel workers: an
-- INSERT ... SELECT never runs in parallel. enable_sort is off because the planner
-- underestimates how many insights are pending (a nightly run's 100,000 as 3,000) and
-- would sort them all for the aggregate: it hashes the users. The totals are what
-- pending_sums gives each user without the profile's own cursor (which the batches
-- check), computed alike: keep the two aggregates' arguments the same.
CREATE FUNCTION bondhu.run_pending_totals(run bondhu.task_runs)
RETURNS TABLE (user_id uuid, n integer[], d numeric[], pending_rows integer)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_custom_plan SET enable_sort = off
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- a constant of the statement, not an expression for each insight
    window_start timestamptz := bondhu.run_window_start(run);
BEGIN
    RETURN QUERY
    SELECT r.user_id,
           bondhu.insight_counts(r.doc, r.observed_at >= window_start, r.source = 'chat') FILTER (WHERE r.analysed),
           bondhu.insight_sums(r.doc, r.observed_at >= window_start, r.source = 'chat') FILTER (WHERE r.analysed),
           count(*)::integer
    FROM bondhu.insight_rows r
    WHERE bondhu.position_pending(r.ingest_pos, run.covered, run.snapshot)
    GROUP BY r.user_id
    HAVING bool_or(r.analysed);
END $$;

-- Stages the run's totals in bondhu.run_totals (replacing what an unfinished run left).
CREATE FUNCTION bondhu.stage_run_totals(run bondhu.task_runs) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    -- what an unfinished run left (DELETE, not TRUNCATE: no lock that waits for readers
    -- such as pg_dump)
    DELETE FROM bondhu.run_totals;
    INSERT INTO bondhu.run_totals (user_id, n, d, pending_rows)
    SELECT t.user_id, t.n, t.d, t.pending_rows FROM bondhu.run_pending_totals(run) t;
$$;

-- Takes the staged totals of `users` out of bondhu.run_totals (apply_pending): a batch
-- leaves no rows behind, and rows taken by a statement that fails come back with its
-- rollback. One plan a session, as apply_pending's (PostgreSQL 18 plans an SQL
-- function's statement for its arguments' values too).
CREATE FUNCTION bondhu.take_staged_totals(users uuid[])
RETURNS TABLE (user_id uuid, n integer[], d numeric[], pending_rows integer)
LANGUAGE sql SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM bondhu.run_totals t WHERE t.user_id = ANY (users)
    RETURNING t.user_id, t.n, t.d, t.pending_rows
$$;

-- The next batch_size staged users after the run's last one, in key order (all of them
-- when batch_size is NULL).
CREATE FUNCTION bondhu.next_users(run bondhu.task_runs, batch_size integer) RETURNS uuid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT t.user_id FROM bondhu.run_totals t
                 WHERE run.resume_after IS NULL OR t.user_id > run.resume_after
                 ORDER BY t.user_id LIMIT batch_size)
$$;

-- Applies the run's pending insights of `users` (in key order), and returns what it did
-- as a run's counts (record_step).
CREATE FUNCTION bondhu.apply_counts(run bondhu.task_runs, users uuid[]) RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('users', a.user_count, 'succeeded', a.user_count,
                              'records', a.insights_processed, 'insights_processed', a.insights_processed,
                              'rejected_insights', a.rejected_insights, 'stale_insights', a.stale_insights,
                              'ignored_keys', a.ignored_keys,
                              'rejected_by_reason', jsonb_build_object(
                                  'not_an_object', a.not_an_object, 'not_a_number', a.not_a_number,
                                  'over_100', a.over_100))
    FROM bondhu.apply_pending(users, run.covered, run.snapshot, bondhu.run_window_start(run),
                              (run.metadata #>> '{settings,dampening}')::numeric, run.id) a
$$;

-- Locks the profiles of `users` that this statement sees, in key order, and returns the
-- users it finds none for (never created, deleted while the lock waited, or created by
-- a transaction that had not committed when the statement began), in no order. The
-- missing are looked for only when some are missing: most users of a run have a
-- profile, and looking every user up before the lock cost ~2.7 us a user (a night of
-- 20,000 users: 686 -> 602 ms, measured paired). One plan a session, as
-- take_staged_totals'.
CREATE FUNCTION bondhu.lock_profiles(users uuid[]) RETURNS uuid[]
LANGUAGE sql SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
    WITH locked AS MATERIALIZED (
        SELECT p.user_id FROM public.user_personality_profiles p
        WHERE p.user_id = ANY (users) ORDER BY p.user_id FOR UPDATE OF p
    )
    SELECT CASE WHEN (SELECT count(*) FROM locked) = cardinality(users) THEN '{}'::uuid[]
                ELSE ARRAY(SELECT u.user_id FROM unnest(users) u(user_id)
                           EXCEPT
                           SELECT l.user_id FROM locked l) END
$$;

-- Creates the profiles of `users` in key order (each starts at 50), but for those
-- another transaction created meanwhile (waited for when it has not committed). Key
-- order, as an application creating several profiles would: the two then wait for each
-- other instead of deadlocking. The profiles' BEFORE INSERT triggers fire for each user
-- given.
CREATE FUNCTION bondhu.create_profiles(users uuid[]) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO public.user_personality_profiles (user_id)
    SELECT u.user_id FROM unnest(users) u(user_id) ORDER BY u.user_id
    ON CONFLICT (user_id) DO NOTHING
$$;

-- Locks the profiles of `users`, creating the missing ones (lock_profiles, then
-- create_profiles), then applies the run's pending insights of them (apply_counts), and
-- returns the counts. A profile deleted while the lock waited is created again (its
-- user starts at 50 with what is pending); one that cannot be locked after that
-- (deleted again, or not created because a trigger skipped it) is an error (40001), and
-- its insights stay pending. The existing profiles are locked in key order, then the
-- missing ones created in key order and locked: a transaction that creates one of the
-- batch's missing profiles and then waits for one of its existing ones can deadlock
-- with the run (PostgreSQL fails one of the two; a batch that fails is redone user by
-- user, and nothing is applied twice or lost). An error here (an app trigger refusing a
-- new profile, too) leaves the caller to undo the whole call.
CREATE FUNCTION bondhu.lock_and_apply(run bondhu.task_runs, users uuid[]) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing uuid[] := bondhu.lock_profiles(users);
BEGIN
    IF cardinality(missing) > 0 THEN
        PERFORM bondhu.create_profiles(missing);
        -- those another transaction created meanwhile are locked here; ours are ours
        IF cardinality(bondhu.lock_profiles(missing)) > 0 THEN
            RAISE EXCEPTION 'bondhu: a profile of the batch could not be created and locked (deleted again during the run, or skipped by a trigger)'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    RETURN bondhu.apply_counts(run, users);
END $$;

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
            counts := bondhu.add_counts(counts, bondhu.lock_and_apply(run, ARRAY[one_user]));
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

-- An update run's step: the first one stages the run's totals (stage_run_totals); each
-- applies the pending insights of the run's next batch_size staged users in key order
-- (all of them when batch_size is NULL) and adds the counts to the run's row. Returns
-- whether users may be left. When the batch's set-based statement fails, its users are
-- redone one by one (apply_one_by_one).
CREATE FUNCTION bondhu.apply_update_batch(run bondhu.task_runs, batch_size integer) RETURNS boolean
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    batch uuid[];
    counts jsonb;
BEGIN
    IF run.resume_after IS NULL THEN
        PERFORM bondhu.stage_run_totals(run);
    END IF;
    batch := bondhu.next_users(run, batch_size);
    IF cardinality(batch) = 0 THEN
        PERFORM bondhu.record_step(run.id, '{}', true);
        RETURN false;
    END IF;
    -- The batch's profiles are locked (lock_and_apply): a self-service update holding
    -- one of them is waited for, then seen. Creating a missing profile is part of the
    -- attempt: a user whose new profile an app trigger refuses is one failed user, not
    -- a failed run.
    BEGIN
        counts := bondhu.lock_and_apply(run, batch);
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
