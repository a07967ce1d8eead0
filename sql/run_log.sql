-- bondhu: the run log, and the life of a run (shared by update and cleanup runs).

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
-- started it (the CALL) is still active in the same backend, in this database (a copy
-- of the run log in another database has no live run). SECURITY DEFINER: a caller
-- without pg_read_all_stats sees no state of other roles' backends (the scheduler's).
CREATE FUNCTION bondhu.run_is_alive(backend_pid integer, backend_start timestamptz, executed_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
                   WHERE a.pid = backend_pid AND a.backend_start = run_is_alive.backend_start
                     AND a.datname = current_database()
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
-- The life of a run, the same for both tasks
------------------------------------------------------------------------------------
-- A run, of either task, in three steps that the task's function (bondhu_update_all(),
-- bondhu_cleanup_insights()) takes in one transaction (run_at_once) and its procedure
-- (bondhu_run_update_all(), bondhu_run_cleanup()) in many, committing each (run_in_steps):
--   start:  the task's start function (start_update_run, start_cleanup_run) checks its
--           arguments, takes the run lock and logs the run as 'running' (start_run) with
--           what the run is to do, in the run's own columns;
--   step:   run_step does the run's next step (a batch of users, a slice of time; all
--           that is left when the step is NULL) and adds its counts to the run's row;
--   finish: finish_run closes the row with the run's status, then does the task's own
--           ending (a completed update moves the global cursor; a cleanup prunes the log).
-- The run lock is a transaction-level row lock (bondhu.run_locks), so that no error,
-- cancel or transaction block can leave it held: a single-transaction run holds it throughout; a
-- procedure's run takes it again in every transaction it commits (own_run), and between
-- them its 'running' row, alive while its CALL is (run_is_alive), keeps other runs out.
-- A run whose session moved on shows as failed in system_tasks at once, and is marked
-- failed ('interrupted') by the next run of its task. start, run_step and finish_run are
-- SECURITY DEFINER so that operators and the scheduler role can run the procedures,
-- which cannot be (they commit); so they take nothing from their caller but a run id
-- (and a step size), and act only on a run of the caller's own session: its cursors and
-- progress are in its row.

-- The run locks: one row per task, locked FOR UPDATE by each transaction of its run. A
-- row lock, not an advisory lock: advisory lock keys are open to every role, so any role
-- able to connect could hold a task's key and have its every run skipped. No role has a
-- privilege on this table.
CREATE TABLE bondhu.run_locks (
    task_name text PRIMARY KEY
        CONSTRAINT known_task CHECK (task_name IN ('personality_update', 'insights_cleanup'))
);
INSERT INTO bondhu.run_locks (task_name) VALUES ('personality_update'), ('insights_cleanup');

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
-- alive, or `held_back_by` (the task's start function's reason the run may not start
-- now) is not NULL: then logs a 'skipped' run, with that reason, and returns it.
CREATE FUNCTION bondhu.lock_run(task text, held_back_by text, OUT skipped bondhu.task_runs)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A live run between two of its transactions holds no lock: its row says it. The
    -- row is checked again, in a statement of its own (a new snapshot, fresh activity
    -- statistics), once the lock is held: a run that committed its row meanwhile shows.
    IF held_back_by IS NULL AND NOT EXISTS (SELECT FROM bondhu.live_runs(task)) THEN
        PERFORM FROM bondhu.run_locks l WHERE l.task_name = task FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            IF NOT EXISTS (SELECT FROM bondhu.live_runs(task)) THEN
                PERFORM bondhu.mark_interrupted_runs(task);
                RETURN;
            END IF;
        END IF;
    END IF;
    INSERT INTO bondhu.task_runs (task_name, status, finished_at, duration_seconds, error_message)
    VALUES (task, 'skipped', clock_timestamp(), 0,
            coalesce(held_back_by, CASE task WHEN 'personality_update' THEN 'another personality update was running'
                                             ELSE 'another cleanup was running' END))
    RETURNING * INTO skipped;
END $$;

-- The task's runs logged 'running' whose session is still running them (run_is_alive).
-- Each call reads what committed before it (VOLATILE: the run lock's second look), and
-- the sessions' activity as it is now: Postgres keeps what a transaction first read of
-- pg_stat_activity until the transaction ends, and a run that started since would look
-- dead.
CREATE FUNCTION bondhu.live_runs(task text) RETURNS SETOF bondhu.task_runs
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_stat_clear_snapshot();
    SELECT * FROM bondhu.task_runs t
    WHERE t.task_name = task AND t.status = 'running'
      AND bondhu.run_is_alive(t.backend_pid, t.backend_start, t.executed_at)
$$;

-- Starts a run of `task`: logs it as 'running', with its run lock held, and returns it;
-- or, while another run of the task is alive, or when `held_back_by` gives the task's
-- reason the run may not start now, logs and returns a 'skipped' run (lock_run).
CREATE FUNCTION bondhu.start_run(task text, held_back_by text DEFAULT NULL) RETURNS bondhu.task_runs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs;
BEGIN
    -- What tells runs apart needs both: the run lock's second look at the run rows (a
    -- statement of its own, seeing what committed meanwhile), and the session activity
    -- that tells a live run from one whose session moved on (run_is_alive).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bondhu: a run needs READ COMMITTED, not %', upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Start it outside a transaction block, or in one at READ COMMITTED (the default).';
    ELSIF NOT current_setting('track_activities')::boolean THEN
        RAISE EXCEPTION 'bondhu: a run needs track_activities on'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Other sessions tell a live run from one whose session moved on by its activity.',
                  HINT = 'Leave track_activities at its default (on).';
    END IF;
    PERFORM bondhu.require_superuser_owned_tables();
    run := bondhu.lock_run(task, held_back_by);
    IF run.id IS NULL THEN
        INSERT INTO bondhu.task_runs (task_name, status) VALUES (task, 'running')
        RETURNING * INTO run;
    END IF;
    RETURN run;
END $$;

-- The run `run_id`, if it is an unfinished run of this session, with its task's run
-- lock held for this transaction; otherwise 55000. A step given another session's run,
-- a finished one, or a made-up id does nothing.
CREATE FUNCTION bondhu.own_run(run_id uuid) RETURNS bondhu.task_runs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs;
BEGIN
    SELECT * INTO run FROM bondhu.task_runs t
    WHERE t.id = run_id AND t.status IN ('running', 'failed') AND t.finished_at IS NULL
      AND t.backend_pid = pg_backend_pid() AND t.backend_start = bondhu.backend_start();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'bondhu: % is not an unfinished run of this session', run_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM FROM bondhu.run_locks l WHERE l.task_name = run.task_name FOR UPDATE;
    -- read again under the lock (in a procedure's run, a step's lock is new)
    SELECT * INTO STRICT run FROM bondhu.task_runs t WHERE t.id = run_id;
    RETURN run;
END $$;

-- Does the next step of the run `run_id`: the next `step` users of an update run (a
-- positive integer), the next `step` of time of a cleanup run (a positive interval),
-- all that is left when step is NULL. Returns whether steps are left. A step that fails
-- is rolled back and fails the run (logged with its SQLSTATE); so does a cancel (or
-- statement_timeout) of a procedure's run, while a single-transaction run is cancelled
-- whole.
CREATE FUNCTION bondhu.run_step(run_id uuid, step text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs := bondhu.own_run(run_id);
    batch_size integer;
    slice_length interval;
    error_state text;
    error_text text;
BEGIN
    IF run.task_name = 'personality_update' THEN
        batch_size := step::integer;
    ELSE
        slice_length := step::interval;
    END IF;
    IF batch_size < 1 OR slice_length <= interval '0' THEN
        RAISE EXCEPTION 'bondhu: a step must be a positive number of users or a positive interval, got %', step
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF run.status <> 'running' THEN
        RETURN false;
    END IF;
    BEGIN
        IF run.task_name = 'personality_update' THEN
            RETURN bondhu.apply_update_batch(run, batch_size);
        END IF;
        RETURN bondhu.cleanup_slice(run, slice_length);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        IF step IS NULL AND SQLSTATE = '57014' THEN
            RAISE;
        END IF;
        GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error_text = MESSAGE_TEXT;
        PERFORM bondhu.fail_run(run_id, error_state, error_text);
        RETURN false;
    END;
END $$;

-- a + b, for a run's counts: a number in b is added to a's (missing: 0), an object is
-- added key by key, an array is appended, anything else replaces a's.
CREATE FUNCTION bondhu.add_counts(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a || coalesce(jsonb_object_agg(e.key, CASE jsonb_typeof(e.value)
               WHEN 'number' THEN to_jsonb(coalesce((a ->> e.key)::numeric, 0) + (e.value #>> '{}')::numeric)
               WHEN 'object' THEN bondhu.add_counts(coalesce(a -> e.key, '{}'), e.value)
               WHEN 'array' THEN coalesce(a -> e.key, '[]') || e.value
               ELSE e.value END), '{}')
    FROM jsonb_each(b) e
$$;

-- Adds a step's counts to its run's row, the one place that writes them: 'users',
-- 'succeeded', 'failed' and 'records' go to their columns, the rest into the metadata
-- (add_counts). The first error a step reports ('error': {sqlstate, message}) becomes
-- the run's error message and SQLSTATE. Moves the run's position: the last user done,
-- or where the next slice starts.
CREATE FUNCTION bondhu.record_step(run_id uuid, counts jsonb, all_done boolean,
                                   resume_after uuid DEFAULT NULL, resume_from timestamptz DEFAULT NULL)
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE bondhu.task_runs t SET
        users_processed = t.users_processed + coalesce((counts ->> 'users')::integer, 0),
        successful_updates = t.successful_updates + coalesce((counts ->> 'succeeded')::integer, 0),
        failed_updates = t.failed_updates + coalesce((counts ->> 'failed')::integer, 0),
        records_processed = t.records_processed + coalesce((counts ->> 'records')::bigint, 0),
        error_message = coalesce(t.error_message, counts #>> '{error,message}'),
        metadata = bondhu.add_counts(t.metadata, counts - ARRAY['users', 'succeeded', 'failed', 'records', 'error'])
            || CASE WHEN counts ? 'error' AND NOT t.metadata ? 'sqlstate'
                    THEN jsonb_build_object('sqlstate', counts #> '{error,sqlstate}') ELSE '{}' END,
        resume_after = coalesce(record_step.resume_after, t.resume_after),
        resume_from = coalesce(record_step.resume_from, t.resume_from),
        all_done = record_step.all_done
    WHERE t.id = run_id
$$;

-- Fails the run `run_id` with an error (its SQLSTATE goes into the metadata).
CREATE FUNCTION bondhu.fail_run(run_id uuid, error_state text, error_text text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE bondhu.task_runs t SET status = 'failed', error_message = error_text,
        metadata = t.metadata || jsonb_build_object('sqlstate', error_state)
    WHERE t.id = run_id
$$;

-- Closes the run `run_id` of this session and returns it. Its status: 'failed' when it
-- failed, was not done (a step is left), or every user it tried failed;
-- 'completed_with_errors' when some users failed; otherwise 'completed'. Then the
-- task's own ending: a completed update run has applied every insight its snapshot
-- covers, so the global cursor moves to it (otherwise it stays, and the next run retries
-- exactly what is pending); a cleanup run prunes the run log. A run that did not
-- complete logs one WARNING naming the run (its error is in system_tasks).
CREATE FUNCTION bondhu.finish_run(run_id uuid) RETURNS bondhu.task_runs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run bondhu.task_runs := bondhu.own_run(run_id);
    log_pruned bigint;
BEGIN
    IF run.task_name = 'insights_cleanup' THEN
        DELETE FROM bondhu.task_runs t
        WHERE t.executed_at < (SELECT bondhu.moment_before(now(), s.run_log_retention) FROM bondhu.settings s)
          AND t.id <> run_id;
        GET DIAGNOSTICS log_pruned = ROW_COUNT;
    END IF;
    UPDATE bondhu.task_runs t SET
        status = CASE WHEN t.status = 'failed' OR NOT t.all_done
                           OR (t.failed_updates > 0 AND t.successful_updates = 0) THEN 'failed'
                      WHEN t.failed_updates > 0 THEN 'completed_with_errors' ELSE 'completed' END,
        error_message = CASE WHEN t.status = 'failed' THEN t.error_message
                             WHEN NOT t.all_done THEN 'finished before every step was done'
                             WHEN t.failed_updates > 0 AND t.successful_updates = 0
                             THEN 'every user failed: ' || t.error_message
                             ELSE t.error_message END,
        finished_at = clock_timestamp(),
        duration_seconds = round(extract(epoch FROM clock_timestamp() - t.executed_at)::numeric, 3),
        metadata = t.metadata || CASE WHEN log_pruned IS NULL THEN '{}'
                                       ELSE jsonb_build_object('run_log_rows_pruned', log_pruned) END
    WHERE t.id = run_id
    RETURNING * INTO run;
    IF run.status = 'completed' AND run.task_name = 'personality_update' THEN
        UPDATE bondhu.pipeline_state SET
            applied_xmin = (run.snapshot).xmin_pos, applied_xmax = (run.snapshot).xmax_pos,
            applied_xip = (run.snapshot).xip_pos, advanced_at = now();
    ELSIF run.status <> 'completed' THEN
        -- the run's id and SQLSTATE only: an error message can quote a row
        RAISE WARNING '%', bondhu.run_outcome(run)
            USING DETAIL = format('Run %s, SQLSTATE %s; its error is in system_tasks.',
                                  run.id, coalesce(run.metadata ->> 'sqlstate', 'unknown'));
    END IF;
    RETURN run;
END $$;

-- How a run that did not complete ended, in words for a WARNING or an error.
CREATE FUNCTION bondhu.run_outcome(run bondhu.task_runs) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('bondhu: a %s run %s', CASE run.task_name WHEN 'personality_update' THEN 'personality update'
                                                            ELSE 'cleanup' END,
                  CASE run.status WHEN 'completed_with_errors' THEN 'completed with errors' ELSE run.status END)
$$;

-- A run as its function returns it: what every run has, and its task's own counts.
CREATE FUNCTION bondhu.run_summary(run bondhu.task_runs) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'task_id', run.id, 'status', run.status,
        'duration_seconds', coalesce(run.duration_seconds, 0),
        'error_message', run.error_message, 'sqlstate', run.metadata -> 'sqlstate')
        || CASE run.task_name
           WHEN 'personality_update' THEN jsonb_build_object(
               'users_processed', run.users_processed, 'successful_updates', run.successful_updates,
               'failed_updates', run.failed_updates,
               'insights_processed', coalesce((run.metadata ->> 'insights_processed')::bigint, 0),
               'rejected_insights', coalesce((run.metadata ->> 'rejected_insights')::bigint, 0),
               'rejected_by_reason', coalesce(run.metadata -> 'rejected_by_reason',
                                              '{"not_an_object": 0, "not_a_number": 0, "over_100": 0}'),
               'stale_insights', coalesce((run.metadata ->> 'stale_insights')::bigint, 0))
           ELSE jsonb_build_object(
               'records_processed', run.records_processed,
               'chat_insights_deleted', coalesce((run.metadata ->> 'chat_insights_deleted')::bigint, 0),
               'entertainment_insights_cleared', coalesce((run.metadata ->> 'entertainment_insights_cleared')::bigint, 0))
           END
$$;

-- A run in one transaction: the task's function. A skipped run is returned as it is.
CREATE FUNCTION bondhu.run_at_once(run bondhu.task_runs) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF run.status = 'running' THEN
        PERFORM bondhu.run_step(run.id, NULL);
        run := bondhu.finish_run(run.id);
    END IF;
    RETURN bondhu.run_summary(run);
END $$;

-- A run in many transactions: the task's procedure, for pg_cron and large databases.
-- Commits after every step, so that the run's progress shows in system_tasks while it
-- runs, memory stays bounded and no transaction holds back vacuum for the whole run.
-- A run that did not complete ends the CALL with an error after its row is committed:
-- pg_cron records the job's run as failed, and a manual CALL says so. The error carries
-- the run's SQLSTATE (P0001 when it has none).
-- (No SET search_path: a procedure with one cannot commit; every name and operator is
-- qualified, so that nothing on the caller's search_path is used.)
CREATE PROCEDURE bondhu.run_in_steps(run bondhu.task_runs, step text)
LANGUAGE plpgsql AS $$
BEGIN
    IF run.status OPERATOR(pg_catalog.<>) 'running' THEN
        RETURN;
    END IF;
    COMMIT;
    WHILE bondhu.run_step(run.id, step) LOOP
        COMMIT;
    END LOOP;
    COMMIT;
    run := bondhu.finish_run(run.id);
    COMMIT;
    IF run.status OPERATOR(pg_catalog.<>) 'completed' THEN
        RAISE EXCEPTION '%', bondhu.run_outcome(run)
            USING ERRCODE = coalesce(pg_catalog.jsonb_extract_path_text(run.metadata, 'sqlstate'), 'P0001'),
                  DETAIL = pg_catalog.format('Run %s; its row is committed.', run.id),
                  HINT = pg_catalog.format('SELECT * FROM system_tasks WHERE id = %L', run.id);
    END IF;
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

