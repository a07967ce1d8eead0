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

CREATE TABLE bondhu.task_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_name text NOT NULL CONSTRAINT known_task CHECK (task_name IN ('personality_update', 'insights_cleanup')),
    executed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    status text NOT NULL CONSTRAINT known_status
        CHECK (status IN ('running', 'completed', 'completed_with_errors', 'failed', 'skipped')),
    run_by name NOT NULL DEFAULT session_user,
    -- the backend running it, to tell a live run from one whose session moved on
    backend_pid integer DEFAULT pg_backend_pid(),
    backend_start timestamptz DEFAULT bondhu.backend_start(),
    users_processed integer NOT NULL DEFAULT 0,
    successful_updates integer NOT NULL DEFAULT 0,
    failed_updates integer NOT NULL DEFAULT 0,
    records_processed bigint NOT NULL DEFAULT 0,
    error_message text,
    metadata jsonb NOT NULL DEFAULT '{}',
    duration_seconds numeric,
    -- A running run's own state, which its steps read: they take nothing from their
    -- caller but the run's id (see own_run).
    covered bondhu.cursor,       -- update: the global cursor when the run started
    snapshot bondhu.cursor,      -- update: what the run applies
    resume_after uuid,           -- update: the last user done
    cutoff timestamptz,          -- cleanup: what is older goes
    resume_from timestamptz,     -- cleanup: where the next slice starts
    all_done boolean NOT NULL DEFAULT false  -- every user, or every slice, is done
);
CREATE INDEX task_runs_by_task_time ON bondhu.task_runs (task_name, executed_at DESC);
SELECT pg_catalog.pg_extension_config_dump('bondhu.task_runs', '');

-- The Python pipeline's run log was a table named system_tasks: its rows join the run
-- log, and the table itself is kept, renamed system_tasks_python.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = to_regclass('public.system_tasks') AND relkind = 'r') THEN
        INSERT INTO bondhu.task_runs (id, task_name, executed_at, finished_at, status, run_by, users_processed,
                                      successful_updates, failed_updates, records_processed, error_message,
                                      metadata, duration_seconds)
        SELECT coalesce(t.id, gen_random_uuid()),
               CASE WHEN t.task_name IN ('personality_update', 'insights_cleanup') THEN t.task_name
                    WHEN t.task_name ILIKE '%clean%' THEN 'insights_cleanup' ELSE 'personality_update' END,
               coalesce(t.executed_at, t.created_at, now()), NULL,
               CASE WHEN t.status IN ('running', 'completed', 'completed_with_errors', 'failed', 'skipped')
                         AND t.status <> 'running' THEN t.status ELSE 'failed' END,
               'python pipeline', coalesce(t.users_processed, 0), coalesce(t.successful_updates, 0),
               coalesce(t.failed_updates, 0), coalesce(t.records_processed, 0), t.error_message,
               coalesce(t.metadata, '{}') || jsonb_build_object('imported_from', 'system_tasks_python',
                                                                'original_task_name', t.task_name,
                                                                'original_status', t.status),
               t.duration_seconds
        FROM public.system_tasks t;
        ALTER TABLE public.system_tasks RENAME TO system_tasks_python;
    END IF;
END $$;

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
CREATE VIEW public.system_tasks AS
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
COMMENT ON VIEW public.system_tasks IS 'Every personality_update and insights_cleanup run, scheduled or manual.';

------------------------------------------------------------------------------------
-- Insight documents and trait math
------------------------------------------------------------------------------------
-- Every insight, from both sources, as one relation. An interaction whose
-- personality_insights is SQL NULL or JSON null is not analysed yet: not an insight.
CREATE VIEW bondhu.insights AS
    SELECT c.user_id, 'chat'::text AS source, c.adjustments AS doc,
           coalesce(c."timestamp", c.created_at) AS observed_at, c.ingest_pos
    FROM public.chat_personality_insights c
    UNION ALL
    SELECT e.user_id, 'entertainment'::text, e.personality_insights,
           e.created_at, e.ingest_pos
    FROM public.entertainment_interactions e
    WHERE e.personality_insights IS NOT NULL AND e.personality_insights <> 'null'::jsonb;

-- What one user's pending insights add up to, in one pass over them: two aggregates
-- that share their state (Postgres computes it once), written in Rust (src/aggregate.rs,
-- the rule in src/insight.rs). Each takes the document, whether it is inside the
-- window (fresh), and whether it came from chat. A stale insight is only counted; a
-- fresh one counts or is rejected whole.
--   insight_counts: {applied, from chat, from entertainment, rejected, stale, ignored keys}
--   insight_sums:   the applied adjustments of each trait added up exactly, in the
--                   order openness, conscientiousness, extraversion, agreeableness,
--                   neuroticism (0 for a trait no insight adjusts)
-- SSPACE, the state's size, lets the planner hash the users instead of sorting every
-- insight.
CREATE AGGREGATE bondhu.insight_counts(doc jsonb, fresh boolean, from_chat boolean) (
    SFUNC = bondhu.insight_totals_step, STYPE = internal, SSPACE = 256,
    FINALFUNC = bondhu.insight_counts_final
);
CREATE AGGREGATE bondhu.insight_sums(doc jsonb, fresh boolean, from_chat boolean) (
    SFUNC = bondhu.insight_totals_step, STYPE = internal, SSPACE = 256,
    FINALFUNC = bondhu.insight_sums_final
);

-- new = clamp(current + dampening * sum, 0, 100), in exact decimal arithmetic. A trait
-- without a value (an adopted profile) starts at 50, like a missing profile.
CREATE FUNCTION bondhu.adjusted_trait(current double precision, total numeric, dampening numeric)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(100, greatest(0, coalesce(current, 50)::numeric + dampening * total))::double precision
$$;

------------------------------------------------------------------------------------
-- Applying pending insights
------------------------------------------------------------------------------------
-- Applies every insight that is covered by p_new and by neither p_global nor the
-- profile's own cursor, for the users from p_first to p_last (in key order; a range
-- is cheaper to test per insight than a list). The caller holds the row locks of the
-- profiles of the users in that range with pending insights, taken before p_new was
-- read. Returns one row per user that had pending insights (fresh, stale or rejected).
-- Planned for each call: a generic plan cannot know whether it serves one user or a
-- batch of all of them.
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

-- {"openness": {"before", "after", "change"}, ...} for two trait arrays.
CREATE FUNCTION bondhu.trait_changes(before double precision[], after double precision[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_object_agg(t.name, jsonb_build_object(
               'before', before[t.i], 'after', after[t.i],
               'change', after[t.i]::numeric - before[t.i]::numeric))
    FROM unnest(ARRAY['openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism'])
         WITH ORDINALITY AS t(name, i)
$$;

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

-- The global cursor, as last advanced.
CREATE FUNCTION bondhu.global_cursor() RETURNS bondhu.cursor
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ROW(s.applied_xmin, s.applied_xmax, s.applied_xip)::bondhu.cursor
    FROM bondhu.pipeline_state s
$$;

-- A personality update run, in three steps that bondhu_update_all() takes in one
-- transaction and bondhu_run_update_all() in many (one per batch of users):
--   start_update_run:  takes the run lock, logs the run as 'running', takes the snapshot;
--   apply_update_batch: applies the pending insights of the next users, in key order;
--   finish_update_run: advances the global cursor unless a user failed, closes the log row.
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
CREATE FUNCTION bondhu.mark_interrupted_runs(task text) RETURNS void
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

-- Updates every user with pending insights, in one transaction. Never overlaps another
-- run: a call while one runs returns status 'skipped'. Each call leaves one row in
-- system_tasks.
CREATE FUNCTION public.bondhu_update_all() RETURNS jsonb
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
COMMENT ON FUNCTION public.bondhu_update_all() IS
    'Applies every user''s pending insights, each exactly once, in one transaction; logs the run in system_tasks.';

-- The same, committing after every batch of users: for pg_cron and large databases. A
-- self-service update waits for one batch at most, memory stays bounded, and the run's
-- progress shows in system_tasks while it runs.
CREATE PROCEDURE public.bondhu_run_update_all(batch_size integer DEFAULT 1000)
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
COMMENT ON PROCEDURE public.bondhu_run_update_all(integer) IS
    'Applies every user''s pending insights, each exactly once, committing every batch_size users; logs the run in system_tasks.';

-- A cleanup run, in three steps that bondhu_cleanup_insights() takes in one transaction
-- and bondhu_run_cleanup() in many (one per slice of time), like an update run:
--   start_cleanup_run:  checks older_than, takes the cleanup lock, logs the run;
--   cleanup_slice:      deletes chat insights and clears entertainment insights written
--                       in one slice of time before the cutoff (found by BRIN indexes);
--   finish_cleanup_run: prunes the run log, closes the log row.
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

CREATE FUNCTION bondhu.cleanup_summary(run bondhu.task_runs) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('task_id', run.id, 'status', run.status,
        'records_processed', run.records_processed,
        'chat_insights_deleted', coalesce((run.metadata ->> 'chat_insights_deleted')::bigint, 0),
        'entertainment_insights_cleared', coalesce((run.metadata ->> 'entertainment_insights_cleared')::bigint, 0),
        'error_message', run.error_message)
$$;

CREATE FUNCTION public.bondhu_cleanup_insights(older_than interval DEFAULT '90 days') RETURNS jsonb
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
COMMENT ON FUNCTION public.bondhu_cleanup_insights(interval) IS
    'Deletes chat insights and clears entertainment insights older than older_than (at least the insight window), in one transaction.';

-- The same with the insight_retention setting, committing after every slice_length of
-- insights (oldest first): for pg_cron and large tables, so that no transaction holds
-- back vacuum for the whole run.
CREATE PROCEDURE public.bondhu_run_cleanup(slice_length interval DEFAULT '1 day')
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
COMMENT ON PROCEDURE public.bondhu_run_cleanup(interval) IS
    'Cleans up insights older than the insight_retention setting, committing after every slice_length of them; logs the run in system_tasks.';

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

-- Advisory lock keys of bondhu's tasks: class 'bndh', one object id per task.
CREATE FUNCTION bondhu.lock_key(task text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (x'626e6468'::bigint << 32) | CASE task WHEN 'personality_update' THEN 1 WHEN 'insights_cleanup' THEN 2 END
$$;
