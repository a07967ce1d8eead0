-- bondhu: cleanup runs: insights older than the retention go (the life of a run:
-- run_log.sql). Chat insights are deleted; on entertainment interactions the insight is
-- cleared (the interaction belongs to the entertainment feature).

-- How far back an update run under way counts insights as fresh, as far as a cleanup
-- starting now can see: `window_start`, the earliest window start of the update runs
-- logged 'running' and alive (a procedure's run, in or between its transactions; it
-- may have started earlier, or with a longer window), NULL when there is none; and
-- `unseen`, true when a transaction holds the update's run lock while no such run is
-- logged: a single-transaction run (or a procedure's first transaction), whose row shows
-- only once it commits. The lock is tried without waiting and not kept (the block's
-- subtransaction is rolled back): a cleanup never waits for an update run, and an update
-- run that starts while a cleanup's transaction is open runs (one that tries its lock
-- in the very instant of the try is 'skipped').
CREATE FUNCTION bondhu.update_runs_window_start(OUT window_start timestamptz, OUT unseen boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lock_free boolean;
BEGIN
    BEGIN
        PERFORM FROM bondhu.run_locks l WHERE l.task_name = 'personality_update' FOR KEY SHARE SKIP LOCKED;
        lock_free := FOUND;
        RAISE EXCEPTION USING ERRCODE = 'ZB000';
    EXCEPTION WHEN SQLSTATE 'ZB000' THEN
        NULL;
    END;
    -- after the try (live_runs reads fresh activity statistics): a run that held the lock
    -- and has committed its row by now shows
    SELECT min(bondhu.run_window_start(t)) INTO window_start FROM bondhu.live_runs('personality_update') t;
    unseen := NOT lock_free AND window_start IS NULL;
END $$;

-- Starts a cleanup run (or logs a skipped one): its cutoff, and where its first slice
-- starts, go into its row. Refuses, changing nothing, any older_than that could delete
-- insights not applied yet.
CREATE FUNCTION bondhu.start_cleanup_run(older_than interval) RETURNS bondhu.task_runs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- The window, read with the settings row share-locked: a longer window cannot
    -- commit while this transaction is open, nor later while the run is alive
    -- (settings_refuse_window_past_cleanup). NULL while a change to the settings is under
    -- way: the run is then skipped, not kept waiting.
    locked_window interval := (SELECT s.insight_window FROM bondhu.settings s FOR SHARE SKIP LOCKED);
    window_length interval := coalesce(locked_window, (SELECT s.insight_window FROM bondhu.settings s));
    run_cutoff timestamptz := bondhu.moment_before(now(), older_than);
    run bondhu.task_runs;
    under_way record;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF run_cutoff >= now() THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than must be a positive interval, got %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    -- compared as moments, not intervals: '30 days' is shorter than '1 month' after a
    -- 31-day month, although interval comparison counts a month as 30 days
    ELSIF run_cutoff > bondhu.moment_before(now(), window_length) THEN
        RAISE EXCEPTION 'bondhu_cleanup_insights: older_than (%) is shorter than the insight window (%)', older_than, window_length
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Insights inside the window may not be applied yet; deleting them would lose them.',
                  HINT = 'Use an interval of at least bondhu.settings.insight_window.';
    END IF;
    -- operators choose older_than (bondhu_cleanup_insights); the scheduler's runs use the
    -- insight_retention setting (bondhu_run_cleanup)
    IF NOT bondhu.caller_is_operator()
       AND older_than <> (SELECT s.insight_retention FROM bondhu.settings s) THEN
        RAISE EXCEPTION 'bondhu: only operators may clean up with another interval than insight_retention'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- nothing an update run under way counts as fresh (update_runs_window_start)
    under_way := bondhu.update_runs_window_start();
    run := bondhu.start_run('insights_cleanup',
                            CASE WHEN locked_window IS NULL THEN 'the settings were being changed'
                                 WHEN under_way.unseen
                                 THEN 'a personality update held the run lock before its run was logged' END);
    IF run.status = 'running' THEN
        run_cutoff := least(run_cutoff, under_way.window_start);
        PERFORM bondhu.note_transaction_cleanup_cutoff(run_cutoff);
        UPDATE bondhu.task_runs t SET
            cutoff = run_cutoff,
            resume_from = least(
                (SELECT min(c."timestamp") FROM public.chat_personality_insights c WHERE c."timestamp" < run_cutoff),
                (SELECT min(e.created_at) FROM public.entertainment_interactions e
                 WHERE e.created_at < run_cutoff AND e.personality_insights IS NOT NULL)),
            metadata = jsonb_build_object('older_than', older_than, 'cutoff', run_cutoff,
                                          'update_run_window_start', under_way.window_start,
                                          'chat_insights_deleted', 0, 'entertainment_insights_cleared', 0)
        WHERE t.id = run.id
        RETURNING * INTO run;
    END IF;
    RETURN run;
END $$;

-- A cleanup run's step: removes the run's next slice_length of insights before its
-- cutoff, oldest first (found by BRIN indexes; all of them when slice_length is NULL),
-- and adds the counts to the run's row. Returns whether slices are left.
CREATE FUNCTION bondhu.cleanup_slice(run bondhu.task_runs, slice_length interval) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- NULL: since ever
    from_time timestamptz := CASE WHEN slice_length IS NOT NULL THEN run.resume_from END;
    to_time timestamptz := least(from_time + slice_length, run.cutoff);
    chat_deleted bigint;
    entertainment_cleared bigint;
BEGIN
    IF slice_length IS NOT NULL AND (run.resume_from IS NULL OR run.resume_from >= run.cutoff) THEN
        PERFORM bondhu.record_step(run.id, '{}', true);
        RETURN false;
    END IF;
    DELETE FROM public.chat_personality_insights c
    WHERE c."timestamp" < to_time AND (from_time IS NULL OR c."timestamp" >= from_time);
    GET DIAGNOSTICS chat_deleted = ROW_COUNT;
    UPDATE public.entertainment_interactions e SET personality_insights = NULL
    WHERE e.created_at < to_time AND (from_time IS NULL OR e.created_at >= from_time)
      AND e.personality_insights IS NOT NULL;
    GET DIAGNOSTICS entertainment_cleared = ROW_COUNT;
    PERFORM bondhu.record_step(run.id,
        jsonb_build_object('records', chat_deleted + entertainment_cleared,
                           'chat_insights_deleted', chat_deleted,
                           'entertainment_insights_cleared', entertainment_cleared),
        to_time >= run.cutoff, resume_from => to_time);
    RETURN to_time < run.cutoff;
END $$;

-- Cleans up insights older than older_than (at least the insight window), in one
-- transaction. Never overlaps another cleanup: a call while one runs returns status
-- 'skipped'.
CREATE FUNCTION public.bondhu_cleanup_insights(older_than interval DEFAULT '90 days') RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT bondhu.run_at_once(bondhu.start_cleanup_run(older_than))
$$;
COMMENT ON FUNCTION public.bondhu_cleanup_insights(interval) IS
    'Deletes chat insights and clears entertainment insights older than older_than (at least the insight window), in one transaction.';

-- The same with the insight_retention setting, committing after every slice_length of
-- insights (oldest first): for pg_cron and large tables, so that no transaction holds
-- back vacuum for the whole run. A run that did not complete ends the CALL with an
-- error (after its row is committed), so pg_cron records a failure.
CREATE PROCEDURE public.bondhu_run_cleanup(slice_length interval DEFAULT '1 day')
LANGUAGE plpgsql AS $$
DECLARE
    retention interval := (SELECT s.insight_retention FROM bondhu.settings s);
BEGIN
    IF slice_length IS NULL OR slice_length <= interval '0' THEN
        RAISE EXCEPTION 'bondhu_run_cleanup: slice_length must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM bondhu.refuse_transaction_block('bondhu_run_cleanup', 'SELECT bondhu_cleanup_insights()');
    CALL bondhu.run_in_steps(bondhu.start_cleanup_run(retention), slice_length::text);
END $$;
COMMENT ON PROCEDURE public.bondhu_run_cleanup(interval) IS
    'Cleans up insights older than the insight_retention setting, committing after every slice_length of them; logs the run in system_tasks.';
