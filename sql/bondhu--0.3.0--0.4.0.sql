-- bondhu 0.3.0 -> 0.4.0: one run lifecycle for update and cleanup runs; failed runs
-- reach pg_cron and the log; schedules in the operator's zone; health that says what to
-- do; a reinstall keeps settings, schedules and the run log. A delta: only what changed
-- (CHANGELOG.md). The routines were drafted by scripts/upgrade_delta.py (CONTRIBUTING.md);
-- scripts/test.sh checks that 0.3.0 plus this script has the same catalog fingerprint as
-- a fresh 0.4.0 install.
\echo Use "ALTER EXTENSION bondhu UPDATE TO '0.4.0'" to load this file. \quit

-- Routines whose arguments or result changed, or that are gone.
DROP FUNCTION bondhu.require_own_profile(target uuid);
DROP FUNCTION bondhu.admit_self_update(target uuid);
DROP FUNCTION bondhu.lock_run(task text, OUT skipped bondhu.task_runs);
DROP FUNCTION bondhu.live_run_exists(task text);
DROP FUNCTION public.bondhu_schedule(update_schedule text, cleanup_schedule text);
DROP FUNCTION bondhu.jobs();
DROP FUNCTION bondhu.cleanup_slice(run_id uuid, slice_length interval);
DROP FUNCTION bondhu.apply_update_batch(run_id uuid, batch_size integer);
DROP FUNCTION bondhu.apply_pending(p_first uuid, p_last uuid, p_global bondhu.cursor, p_new bondhu.cursor, p_task_id uuid, p_trigger text);
DROP FUNCTION bondhu.own_run(run_id uuid, task text);
DROP FUNCTION bondhu.lock_key(task text);
DROP FUNCTION bondhu.cleanup_summary(run bondhu.task_runs);
DROP FUNCTION bondhu.finish_cleanup_run(run_id uuid);
DROP FUNCTION bondhu.finish_update_run(run_id uuid);
DROP FUNCTION bondhu.next_pending_user(after uuid, covered bondhu.cursor, snapshot bondhu.cursor);
DROP FUNCTION bondhu.data_tables();

-- The schedules operators set, each in its own zone (scheduling.sql).
CREATE TABLE bondhu.schedules (
    id text PRIMARY KEY CONSTRAINT known_job CHECK (id IN ('personality_update', 'insights_cleanup')),
    schedule text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC',
    paused_at timestamptz,
    -- for a job in another zone than pg_cron's: when it last took its run times
    -- (take_due_run), or when its schedule was set or resumed: only a run time after it
    -- is due
    last_due_at timestamptz
);
SELECT pg_catalog.pg_extension_config_dump('bondhu.schedules', '');

-- A run's totals, staged by its first step (update.sql).
CREATE UNLOGGED TABLE bondhu.run_totals (
    user_id uuid PRIMARY KEY,
    n integer[] NOT NULL,
    d numeric[] NOT NULL,
    pending_rows integer NOT NULL
);

-- The run locks, row locks no other role may take: an advisory lock's key any role could
-- hold (run_log.sql).
CREATE TABLE bondhu.run_locks (
    task_name text PRIMARY KEY
        CONSTRAINT known_task CHECK (task_name IN ('personality_update', 'insights_cleanup'))
);
INSERT INTO bondhu.run_locks (task_name) VALUES ('personality_update'), ('insights_cleanup');

-- The insight window: neither its months nor the rest negative (settings.sql). An
-- existing window such as '1 mon -30 days' stops the update here, naming the constraint.
ALTER TABLE bondhu.settings DROP CONSTRAINT insight_window_positive,
    ADD CONSTRAINT insight_window_positive CHECK (insight_window > interval '0'
        AND CASE WHEN isfinite(insight_window)
                 THEN date_trunc('month', insight_window) >= interval '0'
                      AND insight_window - date_trunc('month', insight_window) >= interval '0'
                 ELSE true END);

-- A longer insight window must not reach back past the cutoff of a cleanup run under
-- way, or of one this transaction ran: the run deletes insights up to its cutoff, which
-- the longer window would count as fresh. Refused while such a run is alive (a
-- procedure's run between its slices) or when this transaction ran it; a cleanup's
-- transaction keeps the settings row share-locked, so a change waits for one in another
-- transaction, and a cleanup that starts while a change to the settings is under way is
-- skipped (start_cleanup_run). Only at READ COMMITTED: an older snapshot may not show a
-- run that started since. SECURITY DEFINER: it reads the run log and other sessions'
-- activity, which not every role that may change the settings can. Enabled ALWAYS: a
-- restore under session_replication_role = replica changes the window too.
CREATE FUNCTION bondhu.settings_refuse_window_past_cleanup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- counted from this moment, not from the transaction's start: every run the check
    -- sees started before it, and every update run to use the window after it
    moment timestamptz := clock_timestamp();
    window_start timestamptz := bondhu.moment_before(moment, NEW.insight_window);
    cutoff timestamptz;
BEGIN
    IF window_start >= bondhu.moment_before(moment, OLD.insight_window) THEN
        RETURN NEW;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bondhu.settings: lengthen insight_window at READ COMMITTED, not %',
            upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'A cleanup run that started after this transaction''s snapshot must be seen.',
                  HINT = 'Outside a transaction block, or in one at READ COMMITTED (the default).';
    END IF;
    cutoff := greatest((SELECT max(r.cutoff) FROM bondhu.live_runs('insights_cleanup') r),
                       bondhu.transaction_cleanup_cutoff());
    IF cutoff > window_start THEN
        RAISE EXCEPTION 'bondhu.settings: a cleanup run under way, or run in this transaction, deletes insights that the longer insight_window (%) counts as fresh',
            NEW.insight_window
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Lengthen the window once the cleanup run (insights_cleanup in public.system_tasks) has finished, in a transaction of its own.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_window_past_cleanup BEFORE UPDATE OF insight_window ON bondhu.settings
    FOR EACH ROW EXECUTE FUNCTION bondhu.settings_refuse_window_past_cleanup();
ALTER TABLE bondhu.settings ENABLE ALWAYS TRIGGER refuse_window_past_cleanup;

-- The latest cutoff of the cleanups this transaction ran, NULL when none, as
-- note_transaction_cleanup_cutoff noted it: in a transaction-local setting (microseconds
-- since the epoch), which a savepoint rolled back takes back with the cleanup itself.
CREATE FUNCTION bondhu.transaction_cleanup_cutoff() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT timestamptz 'epoch'
           + nullif(current_setting('bondhu.transaction_cleanup_cutoff', true), '')::bigint * interval '1 microsecond'
$$;
-- Notes that this transaction ran a cleanup up to `cutoff` (start_cleanup_run), for a
-- longer window later in the transaction to be refused (settings_refuse_window_past_cleanup).
-- Keeps the latest of the transaction's cutoffs; an infinite cutoff deletes nothing and
-- is not noted.
CREATE FUNCTION bondhu.note_transaction_cleanup_cutoff(cutoff timestamptz) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT set_config('bondhu.transaction_cleanup_cutoff',
               (extract(epoch FROM greatest(cutoff, bondhu.transaction_cleanup_cutoff())) * 1000000)::bigint::text,
               true)
    WHERE isfinite(cutoff)
$$;

-- The one CHECK that ties two settings together fails with a hint saying which to
-- change first (a CHECK constraint cannot carry one); the others say enough themselves.
CREATE FUNCTION bondhu.settings_explain_checks() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.insight_retention < NEW.insight_window THEN
        RAISE EXCEPTION 'bondhu.settings: insight_retention (%) must be at least insight_window (%)',
            NEW.insight_retention, NEW.insight_window
            USING ERRCODE = 'check_violation', CONSTRAINT = 'insight_retention_covers_insight_window',
                  DETAIL = 'Cleanup would delete insights that are not applied yet.',
                  HINT = CASE WHEN NEW.insight_window IS DISTINCT FROM OLD.insight_window
                              THEN 'To lengthen insight_window, raise insight_retention first, or both in one UPDATE.'
                              ELSE 'To shorten insight_retention, shorten insight_window first, or both in one UPDATE.' END;
    END IF;
    RETURN NEW;
END $$;

-- The moment `span` (the insight window, a retention) before `moment`, counted on UTC's
-- calendar: a month is a calendar month, and every session gets the same moment
-- whatever its TimeZone (no daylight saving shift). Runs, self-service updates,
-- bondhu_profile() and cleanup all count with it, so that a cleanup the window allows
-- never deletes an insight a later run counts as fresh. It never goes back as `moment`
-- goes on: where the months land past the end of a shorter month (31 March less a
-- month), the day is cut to the month's last and the moment taken as that day's end,
-- not its time of day (which made 30 March 23:00 less a month later than 31 March 01:00
-- less a month); then the days and the time are subtracted. An infinite span (17 and
-- later: a retention of 'infinity' keeps forever) gives -infinity. One expression, with
-- no FROM clause, so that Postgres inlines it into the calling statement (as a call it
-- cost ~10 us on each self-service update and bondhu_profile(), ~1.3 us inlined).
CREATE FUNCTION bondhu.moment_before(moment timestamptz, span interval) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN NOT isfinite(span) THEN ((moment AT TIME ZONE 'UTC') - span) AT TIME ZONE 'UTC'
                ELSE (CASE WHEN extract(day FROM (moment AT TIME ZONE 'UTC') - date_trunc('month', span))
                                < extract(day FROM moment AT TIME ZONE 'UTC')
                           THEN date_trunc('day', (moment AT TIME ZONE 'UTC') - date_trunc('month', span))
                                + interval '1 day'
                           ELSE (moment AT TIME ZONE 'UTC') - date_trunc('month', span) END
                      - (span - date_trunc('month', span))) AT TIME ZONE 'UTC' END
$$;

CREATE  FUNCTION bondhu."insight_totals_deserialize"(
	"bytes" bytea, /* & [u8] */
	"_unused" internal /* Internal */
) RETURNS internal /* Internal */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'insight_totals_deserialize_wrapper';

CREATE  FUNCTION bondhu."insight_totals_serialize"(
	"state" internal /* Internal */
) RETURNS bytea /* Vec < u8 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'insight_totals_serialize_wrapper';

CREATE  FUNCTION bondhu."insight_totals_combine"(
	"state" internal, /* Internal */
	"other" internal /* Internal */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'insight_totals_combine_wrapper';

-- The trait math in integers, and adjusted_trait taking it first (apply.sql).
CREATE FUNCTION bondhu.adjusted_trait_fixed_point(current double precision, total numeric,
                                                  dampening numeric)
RETURNS double precision IMMUTABLE PARALLEL SAFE
LANGUAGE c AS 'MODULE_PATHNAME', 'adjusted_trait_fixed_point_wrapper';

-- new = clamp(current + dampening * sum, 0, 100), in exact decimal arithmetic. A trait
-- without a value (an adopted profile) starts at 50, like a missing profile. The numeric
-- expression below defines it, with the current value as its 15 significant digits (as
-- PostgreSQL turns a double into numeric: 50.3 + 0.15 is 50.45); but a trait with
-- nothing to add (a sum of 0) keeps its value as stored, clamped, rather than lose the
-- digits past the 15th at every update of the other traits. adjusted_trait_fixed_point
-- (src/trait_math.rs) computes this in integers, ~5 times faster (~0.25 us a trait where
-- numeric took ~1.4 us, and a run makes five a user), the sum of 0 included (whatever
-- the dampening), and gives NULL for other values it cannot hold exactly (the expression
-- then decides). A #[pg_test] compares them on random and edge values.
CREATE OR REPLACE FUNCTION bondhu.adjusted_trait(current double precision, total numeric, dampening numeric)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(bondhu.adjusted_trait_fixed_point(current, total, dampening),
                    least(100, greatest(0, coalesce(current, 50)::numeric + dampening * total))::double precision)
$$;

CREATE FUNCTION bondhu."incarnation_changed"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'incarnation_changed_wrapper';

-- The incarnation of this database's insight positions; starts a new one when the state
-- is not this cluster's own: made in another cluster (another system_identifier), or in
-- a copy of this one (a base backup or a disk snapshot keeps the system_identifier)
-- whose transactions ran ahead: its cursor, in its own incarnation, is past the next
-- transaction id here, so it would cover positions this cluster has yet to give. (A
-- restore that replaces the row starts a new one at once: keep_single_row.)
-- cacheable is false when this call changed the state (the change is not committed
-- yet, so a backend must not remember it).
CREATE OR REPLACE FUNCTION bondhu.resolve_incarnation(OUT incarnation integer, OUT cacheable boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    this_cluster bigint := (SELECT c.system_identifier FROM pg_catalog.pg_control_system() c);
    known bondhu.pipeline_state;
BEGIN
    SELECT * INTO known FROM bondhu.pipeline_state;
    -- (a standby, which cannot write, takes the state as it is: its snapshots may lag
    -- behind the transaction ids of the state it has replayed)
    IF FOUND AND (pg_is_in_recovery()
                  OR known.system_identifier = this_cluster
                     AND NOT (known.applied_xmax >> 48 = known.incarnation
                              AND known.applied_xmax - (known.applied_xmax >> 48 << 48)
                                  > pg_snapshot_xmax(pg_current_snapshot())::text::bigint)) THEN
        incarnation := known.incarnation;
        cacheable := true;
        RETURN;
    END IF;
    IF NOT FOUND THEN
        -- Positions already in the tables (adopted or surviving data) stay below ours,
        -- and so do the profiles' cursors, which outlive the insights they applied (a
        -- purge, then a reinstall): a cursor above our positions would cover them.
        INSERT INTO bondhu.pipeline_state
            (incarnation, system_identifier, applied_xmin, applied_xmax, applied_xip)
        SELECT greatest(1, (max(p) >> 48) + 1), this_cluster, 3, 3, '{}'
        FROM (SELECT max(ingest_pos) AS p FROM public.chat_personality_insights
              UNION ALL
              SELECT max(ingest_pos) FROM public.entertainment_interactions
              UNION ALL
              SELECT max(applied_xmax) FROM public.user_personality_profiles) existing
        ON CONFLICT (single_row) DO NOTHING;
    ELSE
        -- (the row as read: a concurrent call that started the new one first leaves
        -- nothing to do)
        UPDATE bondhu.pipeline_state s
        SET incarnation = s.incarnation + 1, system_identifier = this_cluster
        WHERE s.incarnation = known.incarnation;
    END IF;
    SELECT s.incarnation INTO STRICT incarnation FROM bondhu.pipeline_state s;
    cacheable := false;
END $$;

-- Is a run's session still running it? The run is alive while the statement that
-- started it (the CALL) is still active in the same backend, in this database (a copy
-- of the run log in another database has no live run). SECURITY DEFINER: a caller
-- without pg_read_all_stats sees no state of other roles' backends (the scheduler's).
CREATE OR REPLACE FUNCTION bondhu.run_is_alive(backend_pid integer, backend_start timestamptz, executed_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
                   WHERE a.pid = backend_pid AND a.backend_start = run_is_alive.backend_start
                     AND a.datname = current_database()
                     AND a.state = 'active' AND a.query_start <= executed_at)
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
CREATE OR REPLACE FUNCTION bondhu.run_summary(run bondhu.task_runs) RETURNS jsonb
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

-- bondhu: insight documents, trait math, and applying a range of users' pending insights.

------------------------------------------------------------------------------------
-- Insight documents and trait math
------------------------------------------------------------------------------------
-- Every row of both insight tables, as one relation. A chat row is always an insight; an
-- interaction is one once analysed: its personality_insights is neither SQL NULL nor JSON
-- null. A run stages, and its batches count, rows rather than insights (apply_pending):
-- a count of rows reads only the tables' (user_id, ingest_pos) indexes.
CREATE VIEW bondhu.insight_rows AS
    SELECT c.user_id, 'chat'::text AS source, c.adjustments AS doc,
           coalesce(c."timestamp", c.created_at) AS observed_at, c.ingest_pos, true AS analysed
    FROM public.chat_personality_insights c
    UNION ALL
    SELECT e.user_id, 'entertainment'::text, e.personality_insights, e.created_at, e.ingest_pos,
           e.personality_insights IS NOT NULL AND e.personality_insights <> 'null'::jsonb
    FROM public.entertainment_interactions e;

-- Every insight, from both sources: the analysed rows.
CREATE OR REPLACE VIEW bondhu.insights AS
    SELECT r.user_id, r.source, r.doc, r.observed_at, r.ingest_pos
    FROM bondhu.insight_rows r
    WHERE r.analysed;

-- Why a document would not count in full, checked as the pipeline checks it: empty when
-- it counts in full; otherwise each reason (not an object; a key that is not a trait,
-- which is ignored; a trait that is not a number or over 100 in magnitude, which rejects
-- the whole document). The verdict is the pipeline's own (insight_counts over the one
-- document); the reasons name what to fix. For the app to call before writing, or in a
-- CHECK constraint: CHECK (cardinality(bondhu_insight_problems(adjustments)) = 0).
-- SECURITY DEFINER so that any writer may call it without rights on bondhu's internals.
CREATE FUNCTION public.bondhu_insight_problems(doc jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN v.counts[4] = 0 AND v.counts[6] = 0 THEN '{}'::text[]
        WHEN jsonb_typeof(doc) <> 'object' THEN ARRAY['not an object: the document is rejected']
        ELSE coalesce(nullif(ARRAY(
            SELECT CASE WHEN e.key <> ALL (v.traits) THEN format('unknown key "%s": ignored', e.key)
                        WHEN jsonb_typeof(e.value) <> 'number'
                        THEN format('"%s" is not a number: the document is rejected', e.key)
                        ELSE format('"%s" is over 100 in magnitude: the document is rejected', e.key) END
            FROM jsonb_each(doc) e
            WHERE e.key <> ALL (v.traits) OR jsonb_typeof(e.value) <> 'number'
               OR abs((e.value #>> '{}')::numeric) > 100
            ORDER BY e.key), '{}'), ARRAY['rejected by the pipeline''s rule']) END
    FROM (SELECT bondhu.insight_counts(doc, true, true) AS counts,
                 ARRAY['openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism'] AS traits) v
$$;

COMMENT ON FUNCTION public.bondhu_insight_problems(jsonb) IS
    'Why an insight document would not count in full (empty when it does): for the app to check before writing, or in a CHECK constraint.';

------------------------------------------------------------------------------------
-- Applying pending insights
------------------------------------------------------------------------------------
-- The pending insights of the user `target`: those the cursor `snapshot` covers and
-- neither the cursor `covered` (the global cursor a run started from) nor, when
-- `own_cursor`, the profile's own cursor does. The profile is joined only when
-- `own_cursor`: when a self-service update may have moved it past `covered`
-- (moved_ahead), or always by a caller that holds it. Read by pending_sums, and by
-- has_pending, which stops at the first row. (No SET clause: the planner inlines it.)
CREATE FUNCTION bondhu.pending_insights(target uuid, covered bondhu.cursor, snapshot bondhu.cursor,
                                        own_cursor boolean)
RETURNS TABLE (user_id uuid, source text, doc jsonb, observed_at timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT i.user_id, i.source, i.doc, i.observed_at
    FROM bondhu.insights i
    WHERE NOT own_cursor AND i.user_id = target
      AND bondhu.position_pending(i.ingest_pos, covered, snapshot)
    UNION ALL
    SELECT i.user_id, i.source, i.doc, i.observed_at
    FROM bondhu.insights i
    JOIN public.user_personality_profiles p ON p.user_id = i.user_id
    WHERE own_cursor AND i.user_id = target
      AND bondhu.position_pending(i.ingest_pos, covered, snapshot)
      AND NOT coalesce(bondhu.position_applied(i.ingest_pos, p.applied_xmin, p.applied_xmax, p.applied_xip), false)
$$;

-- The pending insights of the user `target` (pending_insights), summed. An insight
-- observed before window_start is stale. One row when there are any: n, the counts
-- {applied, from chat, from entertainment, rejected, stale, ignored keys, rejected as
-- not an object, for a trait not a number, for a trait over 100}; d, the applied
-- adjustments of each trait added up exactly. Read by apply_pending (a user whose staged
-- totals do not hold), apply_user_pending and bondhu_profile(); a run stages everyone's
-- totals with run_pending_totals. (No SET clause: the planner inlines it into their
-- statements.)
CREATE FUNCTION bondhu.pending_sums(target uuid, covered bondhu.cursor, snapshot bondhu.cursor,
                                    own_cursor boolean, window_start timestamptz)
RETURNS TABLE (user_id uuid, n integer[], d numeric[])
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pending.user_id,
           bondhu.insight_counts(pending.doc, pending.observed_at >= window_start, pending.source = 'chat'),
           bondhu.insight_sums(pending.doc, pending.observed_at >= window_start, pending.source = 'chat')
    FROM bondhu.pending_insights(target, covered, snapshot, own_cursor) pending
    GROUP BY pending.user_id
$$;

-- Has a self-service update moved the profile of `target` past the global cursor
-- `covered`? Then its own cursor counts (pending_sums' own_cursor): has_pending,
-- bondhu_profile. False when there is no profile.
CREATE FUNCTION bondhu.moved_ahead(target uuid, covered bondhu.cursor) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM public.user_personality_profiles p
                   WHERE p.user_id = target
                     AND NOT bondhu.cursor_within(p.applied_xmin, p.applied_xmax, p.applied_xip, covered))
$$;

-- Applies the run's pending insights of `users` (in key order): those the cursor `snapshot`
-- covers and neither the cursor `covered` (the global cursor the run started from) nor
-- the profile's own cursor does; an insight observed before window_start is stale. A
-- user's totals are taken from bondhu.run_totals and used when the profile has applied
-- nothing past `covered` and the staged rows are all still pending; every other
-- user's are computed here from the insights. The caller holds the row locks of the
-- users' profiles, taken before this statement reads the profiles and insights. Returns
-- one row: how many users had pending insights (fresh, stale or rejected), and their
-- insights applied, rejected (in all and for each reason) and stale, and keys ignored.
-- Every batch runs one plan, made once a session (force_generic_plan), that looks its
-- users up by key: planning the statement with its users as constants cost ~0.9 us a
-- user for each `= ANY (users)` in it (~0.5 s for bondhu_update_all's 100,000 users),
-- and ~15 % of a night's batched run with 1,000 users a batch. Measured paired on PG18
-- (100,000 users), the plan made for the users was no faster to run: the full run took
-- 7.01 -> 6.55 s (medians of 8 pairs) and the night of 20,000 users 1.11 -> 1.08 s (of
-- 12), with take_staged_totals and lock_profiles planned once a session too.
CREATE FUNCTION bondhu.apply_pending(users uuid[], covered bondhu.cursor, snapshot bondhu.cursor,
                                     window_start timestamptz, dampening numeric, run_id uuid)
RETURNS TABLE (user_count bigint, insights_processed bigint, rejected_insights bigint, stale_insights bigint,
               ignored_keys bigint, not_an_object bigint, not_a_number bigint, over_100 bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    WITH taken AS (
        -- the totals the run staged, taken out of bondhu.run_totals
        SELECT t.user_id, t.n, t.d, t.pending_rows FROM bondhu.take_staged_totals(users) t
    ), unchanged AS (
        -- Are the batch's pending rows still the ones staged? A run's pending set of
        -- rows only shrinks (a row written after the run started has a position its
        -- snapshot does not cover; a row whose document or user changes, an interaction
        -- analysed too, gets such a position; a deleted one is gone), so when there are as
        -- many as were staged, every user still has the rows, and so the insights, that
        -- were staged: one count for the batch instead of one per user. Rows, not
        -- insights: a count of rows reads only the (user_id, ingest_pos) indexes, and
        -- an insight deleted cannot hide behind an interaction analysed meanwhile.
        SELECT (SELECT count(*) FROM bondhu.insight_rows r
                WHERE r.user_id = ANY (users) AND bondhu.position_pending(r.ingest_pos, covered, snapshot))
               = (SELECT coalesce(sum(t.pending_rows), 0) FROM taken t) AS all_users
    ), pending_now AS (
        -- otherwise how many pending rows each staged user has now, in one pass over
        -- the batch's rows
        SELECT r.user_id, count(*) AS pending_rows
        FROM bondhu.insight_rows r
        WHERE NOT (SELECT u.all_users FROM unchanged u)
          AND r.user_id = ANY (users) AND bondhu.position_pending(r.ingest_pos, covered, snapshot)
        GROUP BY r.user_id
    ), staged_totals AS (
        -- the staged totals of the users whose profile has applied nothing the run's
        -- `covered` cursor does not cover (no self-service update moved it ahead: the
        -- totals are then what computing them again would give), with the profile's
        -- values (the caller holds its lock: the values the update replaces). Each
        -- profile is looked up by its key (OFFSET 0 keeps the lookup per row): a batch
        -- reads its own users' profiles, not every profile to hash them.
        SELECT t.user_id, t.n, t.d, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism
        FROM taken t
        CROSS JOIN LATERAL (SELECT p.applied_xmin, p.applied_xmax, p.applied_xip, p.openness, p.conscientiousness,
                                   p.extraversion, p.agreeableness, p.neuroticism
                            FROM public.user_personality_profiles p WHERE p.user_id = t.user_id OFFSET 0) p
        -- and whose pending rows are still the ones staged: a row rewritten, moved,
        -- analysed or deleted since then has left the run's pending set, and the user is
        -- computed again, so that only its last version counts
        LEFT JOIN pending_now c ON c.user_id = t.user_id
        WHERE bondhu.cursor_within(p.applied_xmin, p.applied_xmax, p.applied_xip, covered)
          AND ((SELECT u.all_users FROM unchanged u) OR c.pending_rows = t.pending_rows)
    ), totals AS (
        SELECT * FROM staged_totals
        UNION ALL
        -- the rest of the batch's users, computed again: only they are looked up (the
        -- batch's users are filtered first, not every profile of the batch read)
        SELECT s.user_id, s.n, s.d, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism
        FROM unnest(users) u(user_id)
        CROSS JOIN LATERAL (SELECT p.user_id, p.openness, p.conscientiousness, p.extraversion, p.agreeableness,
                                   p.neuroticism
                            FROM public.user_personality_profiles p WHERE p.user_id = u.user_id OFFSET 0) p
        CROSS JOIN LATERAL bondhu.pending_sums(p.user_id, covered, snapshot, true, window_start) s
        WHERE u.user_id NOT IN (SELECT t.user_id FROM staged_totals t)
    ), updated AS (
        UPDATE public.user_personality_profiles p SET
            openness = bondhu.adjusted_trait(p.openness, t.d[1], dampening),
            conscientiousness = bondhu.adjusted_trait(p.conscientiousness, t.d[2], dampening),
            extraversion = bondhu.adjusted_trait(p.extraversion, t.d[3], dampening),
            agreeableness = bondhu.adjusted_trait(p.agreeableness, t.d[4], dampening),
            neuroticism = bondhu.adjusted_trait(p.neuroticism, t.d[5], dampening),
            updated_at = CASE WHEN t.n[1] > 0 THEN now() ELSE p.updated_at END,
            applied_xmin = (snapshot).xmin_pos,
            applied_xmax = (snapshot).xmax_pos,
            applied_xip = (snapshot).xip_pos
        FROM totals t
        -- the batch's profiles by key, not every profile hashed: the planner misjudges
        -- how many users the second half of totals brings
        WHERE p.user_id = t.user_id AND p.user_id = ANY (users)
        RETURNING p.user_id, t.n[1] AS applied, t.n[4] AS rejected, t.n[5] AS stale, t.n[6] AS ignored,
                  t.n[7] AS not_an_object, t.n[8] AS not_a_number, t.n[9] AS over_100,
                  -- a trait without a value (an adopted profile) was 50, as adjusted_trait counts it
                  coalesce(t.openness, 50) AS openness_before, p.openness AS openness_after,
                  coalesce(t.conscientiousness, 50) AS conscientiousness_before,
                  p.conscientiousness AS conscientiousness_after,
                  coalesce(t.extraversion, 50) AS extraversion_before, p.extraversion AS extraversion_after,
                  coalesce(t.agreeableness, 50) AS agreeableness_before, p.agreeableness AS agreeableness_after,
                  coalesce(t.neuroticism, 50) AS neuroticism_before, p.neuroticism AS neuroticism_after
    ), history AS (
        INSERT INTO public.personality_profile_history
            (user_id, applied_at, task_id, trigger, insights_processed,
             openness_before, openness_after, conscientiousness_before, conscientiousness_after,
             extraversion_before, extraversion_after, agreeableness_before, agreeableness_after,
             neuroticism_before, neuroticism_after)
        SELECT u.user_id, now(), run_id, 'update_all', u.applied,
               u.openness_before, u.openness_after, u.conscientiousness_before, u.conscientiousness_after,
               u.extraversion_before, u.extraversion_after, u.agreeableness_before, u.agreeableness_after,
               u.neuroticism_before, u.neuroticism_after
        FROM updated u
        WHERE u.applied > 0
    )
    -- the batch's counts in one row (a row a user, with its counts as JSON, was ~8 % of
    -- a run's backend time)
    SELECT count(*), coalesce(sum(u.applied), 0), coalesce(sum(u.rejected), 0), coalesce(sum(u.stale), 0),
           coalesce(sum(u.ignored), 0), coalesce(sum(u.not_an_object), 0), coalesce(sum(u.not_a_number), 0),
           coalesce(sum(u.over_100), 0)
    FROM updated u;
END $$;

-- Applies one user's pending insights (a self-service update): those the cursor
-- `snapshot` covers and neither the global cursor `covered` nor the profile's own cursor
-- does; an insight observed before window_start is stale. The caller holds the profile's
-- row lock, taken before `snapshot` was read. Returns one row when the user had pending
-- insights (fresh, stale or rejected). Written apart from the run's statement
-- (apply_pending) so that one plan, made once per session, serves every call: planning a
-- statement for each call was most of a self-service update's time (1.6 ms at p50, 0.5 ms
-- with the plan kept). The plan is generic on purpose: the planner guesses a range of
-- unknown users as thousands of insights and would otherwise plan each call again.
CREATE FUNCTION bondhu.apply_user_pending(target uuid, covered bondhu.cursor, snapshot bondhu.cursor,
                                          window_start timestamptz, dampening numeric)
RETURNS TABLE (user_id uuid, insights_processed integer, chat_insights integer,
               entertainment_insights integer, rejected_insights integer, stale_insights integer,
               ignored_keys integer, rejected_by_reason jsonb,
               traits_before double precision[], traits_after double precision[])
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    WITH totals AS (
        SELECT s.user_id, s.n, s.d, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism
        FROM public.user_personality_profiles p
        CROSS JOIN LATERAL bondhu.pending_sums(target, covered, snapshot, true, window_start) s
        WHERE p.user_id = target
    ), updated AS (
        UPDATE public.user_personality_profiles p SET
            openness = bondhu.adjusted_trait(p.openness, t.d[1], dampening),
            conscientiousness = bondhu.adjusted_trait(p.conscientiousness, t.d[2], dampening),
            extraversion = bondhu.adjusted_trait(p.extraversion, t.d[3], dampening),
            agreeableness = bondhu.adjusted_trait(p.agreeableness, t.d[4], dampening),
            neuroticism = bondhu.adjusted_trait(p.neuroticism, t.d[5], dampening),
            updated_at = CASE WHEN t.n[1] > 0 THEN now() ELSE p.updated_at END,
            applied_xmin = (snapshot).xmin_pos,
            applied_xmax = (snapshot).xmax_pos,
            applied_xip = (snapshot).xip_pos
        FROM totals t
        WHERE p.user_id = t.user_id
        RETURNING p.user_id, t.n[1] AS applied, t.n[2] AS chat, t.n[3] AS entertainment, t.n[4] AS rejected,
                  t.n[5] AS stale, t.n[6] AS ignored,
                  jsonb_build_object('not_an_object', t.n[7], 'not_a_number', t.n[8], 'over_100', t.n[9])
                      AS rejected_by_reason,
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
        SELECT u.user_id, now(), NULL, 'self_update', u.applied,
               u.before[1], u.after[1], u.before[2], u.after[2], u.before[3], u.after[3],
               u.before[4], u.after[4], u.before[5], u.after[5]
        FROM updated u
        WHERE u.applied > 0
    )
    SELECT u.user_id, u.applied, u.chat, u.entertainment, u.rejected, u.stale, u.ignored, u.rejected_by_reason,
           u.before, u.after
    FROM updated u;
END $$;

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
CREATE OR REPLACE FUNCTION bondhu.update_personality(target uuid) RETURNS jsonb
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

------------------------------------------------------------------------------------
-- Update runs: every user with pending insights (the life of a run: run_log.sql)
------------------------------------------------------------------------------------
-- Starts an update run (or logs a skipped one): the global cursor it starts from, the
-- snapshot it applies up to, and the settings it applies with go into its row (the
-- insight window as written, in the postgres IntervalStyle: run_window_start reads it).
CREATE OR REPLACE FUNCTION bondhu.start_update_run() RETURNS bondhu.task_runs
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
CREATE OR REPLACE FUNCTION public.bondhu_update_all() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT bondhu.run_at_once(bondhu.start_update_run())
$$;

-- The same, committing after every batch of users: for pg_cron and large databases. A
-- self-service update waits for one batch at most. A run that did not complete ends
-- the CALL with an error (after its row is committed), so pg_cron records a failure.
CREATE OR REPLACE PROCEDURE public.bondhu_run_update_all(batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'bondhu_run_update_all: batch_size must be a positive number of users'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM bondhu.refuse_transaction_block('bondhu_run_update_all', 'SELECT bondhu_update_all()');
    CALL bondhu.run_in_steps(bondhu.start_update_run(), batch_size::text);
END $$;

-- bondhu: what the app's frontend reads: the live profile, and the profile and its
-- history without bondhu's internal columns.

-- The profile as it will be after the user's next update: the stored traits plus what
-- the pending insights add, by the rule and the exact arithmetic of an update, as of
-- now. Writes nothing and is not rate limited. Callers as bondhu_update_personality: a
-- signed-in user for their own id, operators for anyone. Its statements are planned once
-- per session, for any user (see apply_user_pending).
CREATE FUNCTION public.bondhu_profile(user_id uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target uuid := bondhu_profile.user_id;
    operator boolean := bondhu.caller_is_operator();
    cfg bondhu.settings;
    profile public.user_personality_profiles;
    covered bondhu.cursor;
    snapshot bondhu.cursor;
    ahead boolean;
    pending record;
    stored double precision[];
    live double precision[];
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'bondhu_profile: user_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF NOT operator THEN
        PERFORM bondhu.require_own_profile(target, 'bondhu_profile');
    END IF;
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    SELECT * INTO profile FROM public.user_personality_profiles p WHERE p.user_id = target;
    snapshot := bondhu.current_cursor();
    covered := bondhu.global_cursor();
    -- a constant of the statement, not a call for each insight
    ahead := bondhu.moved_ahead(target, covered);
    SELECT * INTO pending
    FROM bondhu.pending_sums(target, covered, snapshot, ahead,
                            bondhu.moment_before(now(), cfg.insight_window));
    stored := ARRAY[coalesce(profile.openness, 50), coalesce(profile.conscientiousness, 50),
                    coalesce(profile.extraversion, 50), coalesce(profile.agreeableness, 50),
                    coalesce(profile.neuroticism, 50)];
    live := ARRAY(SELECT bondhu.adjusted_trait(stored[i], coalesce(pending.d[i], 0), cfg.dampening)
                  FROM generate_series(1, 5) i ORDER BY i);
    RETURN jsonb_build_object(
        'user_id', target,
        'openness', live[1], 'conscientiousness', live[2], 'extraversion', live[3],
        'agreeableness', live[4], 'neuroticism', live[5],
        'pending_insights', coalesce(pending.n[1], 0),
        'rejected_insights', coalesce(pending.n[4], 0),
        'stored', jsonb_build_object('openness', stored[1], 'conscientiousness', stored[2],
                                     'extraversion', stored[3], 'agreeableness', stored[4],
                                     'neuroticism', stored[5], 'updated_at', profile.updated_at),
        'as_of', now(),
        -- (greatest ignores NULL: no self-service update made yet)
        'next_update_at', CASE WHEN operator THEN now() ELSE greatest(now(), bondhu.next_self_update_at(target, cfg.self_update_min_interval)) END);
END $$;

COMMENT ON FUNCTION public.bondhu_profile(uuid) IS
    'The live profile: stored traits plus what pending insights will add, as the next update would write them. Writes nothing.';

-- The profile and its history as the app reads them: without bondhu's cursor columns.
-- security_invoker: row level security applies as on the tables (a signed-in user sees
-- their own rows).
CREATE VIEW public.bondhu_profiles WITH (security_invoker = true) AS
    SELECT p.user_id, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism,
           p.created_at, p.updated_at
    FROM public.user_personality_profiles p;

COMMENT ON VIEW public.bondhu_profiles IS 'Each user''s stored Big Five profile (0 to 100).';

CREATE VIEW public.bondhu_profile_history WITH (security_invoker = true) AS
    SELECT h.user_id, h.applied_at, h.openness_after AS openness, h.conscientiousness_after AS conscientiousness,
           h.extraversion_after AS extraversion, h.agreeableness_after AS agreeableness,
           h.neuroticism_after AS neuroticism, h.insights_processed, h.trigger AS applied_by
    FROM public.personality_profile_history h;

COMMENT ON VIEW public.bondhu_profile_history IS
    'Each update of a profile: the traits after it, how many insights it applied, and by what (update_all, self_update).';

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
CREATE OR REPLACE FUNCTION bondhu.start_cleanup_run(older_than interval) RETURNS bondhu.task_runs
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
CREATE OR REPLACE FUNCTION public.bondhu_cleanup_insights(older_than interval DEFAULT '90 days') RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT bondhu.run_at_once(bondhu.start_cleanup_run(older_than))
$$;

-- The same with the insight_retention setting, committing after every slice_length of
-- insights (oldest first): for pg_cron and large tables, so that no transaction holds
-- back vacuum for the whole run. A run that did not complete ends the CALL with an
-- error (after its row is committed), so pg_cron records a failure.
CREATE OR REPLACE PROCEDURE public.bondhu_run_cleanup(slice_length interval DEFAULT '1 day')
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

-- id in health output, pg_cron job name, its schedule until an operator sets one, and
-- its command: `command` when the job's schedule is in pg_cron's zone, `zoned_command`
-- otherwise (it runs the task only when the schedule is due in its own zone).
CREATE FUNCTION bondhu.jobs() RETURNS TABLE (id text, jobname text, default_schedule text, command text,
                                             zoned_command text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('personality_update', 'bondhu_personality_update', '0 2 * * *', 'CALL public.bondhu_run_update_all()',
            'CALL bondhu.run_if_due(''personality_update'')'),
           ('insights_cleanup', 'bondhu_insights_cleanup', '0 3 * * 0', 'CALL public.bondhu_run_cleanup()',
            'CALL bondhu.run_if_due(''insights_cleanup'')')
$$;

-- bondhu's jobs in cron.job (none without pg_cron).
CREATE OR REPLACE FUNCTION bondhu.own_jobs()
RETURNS TABLE (jobid bigint, id text, jobname text, schedule text, command text, active boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.cron_installed() THEN
        RETURN QUERY
        SELECT j.jobid, b.id, j.jobname::text, j.schedule, j.command, j.active
        FROM cron.job j JOIN bondhu.jobs() b ON b.jobname = j.jobname AND j.command IN (b.command, b.zoned_command)
        WHERE j.username = 'bondhu_scheduler' AND j.database = current_database();
    END IF;
END $$;

-- The next time a cron schedule fires after a moment, when its fields are read as wall
-- clock time in `zone`, as pg_cron does, daylight-saving changes included: a wall clock
-- time that a change skips runs when the clock jumps; one that comes twice runs the
-- first time. NULL when the schedule never fires.
CREATE OR REPLACE FUNCTION bondhu.cron_next_run(schedule text, after timestamptz, zone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wall_clock timestamp := to_timestamp(bondhu.cron_next_run_epoch(
        schedule, extract(epoch FROM (after AT TIME ZONE zone))::double precision)) AT TIME ZONE 'UTC';
    moment timestamptz := wall_clock AT TIME ZONE zone;
    earlier timestamptz;
BEGIN
    IF moment AT TIME ZONE zone <> wall_clock THEN
        -- skipped: the first minute whose wall clock time is past it (changes are at most
        -- a few hours)
        RETURN (SELECT min(t) FROM generate_series(moment - interval '3 hours', moment, interval '1 minute') t
                WHERE t AT TIME ZONE zone > wall_clock AND t > after);
    END IF;
    -- twice: Postgres reads it as the later time; it runs the first time only, so the
    -- later one is no run time of its own
    earlier := (SELECT min(t) FROM unnest(ARRAY[moment - interval '1 hour', moment - interval '30 minutes']) t
                WHERE t AT TIME ZONE zone = wall_clock);
    IF earlier IS NULL THEN
        RETURN moment;
    ELSIF earlier > after THEN
        RETURN earlier;
    END IF;
    RETURN bondhu.cron_next_run(schedule, moment, zone);
END $$;

-- Do two zones show the same wall clock time for the next 400 days?
CREATE FUNCTION bondhu.same_zone(a text, b text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a = b OR NOT EXISTS (
        SELECT FROM generate_series(now(), now() + interval '400 days', interval '6 hours') t
        WHERE t AT TIME ZONE a <> t AT TIME ZONE b)
$$;

-- Is `schedule` read on a wall clock (a cron expression), not '@reboot' or 'N seconds'?
CREATE FUNCTION bondhu.is_wall_clock(schedule text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT schedule !~* '^\s*(@reboot|\d+\s*seconds?)\s*$'
$$;

-- Does pg_cron read `schedule` as it is meant in `zone`: not read on a wall clock, or in
-- pg_cron's own zone?
CREATE FUNCTION bondhu.in_cron_zone(schedule text, zone text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT bondhu.is_wall_clock(schedule) OR bondhu.same_zone(zone, bondhu.cron_timezone())
$$;

-- The schedule to give pg_cron for `schedule` read in `zone`: the same when pg_cron
-- reads schedules in that zone; otherwise the minute and hour, in pg_cron's zone, of
-- the schedule's next run after `after`, every day: the job then runs the task only
-- when it is due (run_if_due), and moves itself to the following run's time. So a
-- daylight-saving change in either zone is followed to the minute.
CREATE FUNCTION bondhu.pg_cron_schedule(schedule text, zone text, after timestamptz) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN bondhu.in_cron_zone(schedule, zone) THEN schedule
                ELSE to_char(n AT TIME ZONE bondhu.cron_timezone(), 'FMMI FMHH24') || ' * * *' END
    FROM bondhu.cron_next_run(schedule, after, zone) n
$$;

-- Writes job `id`'s schedule (bondhu.schedules) into pg_cron as bondhu_scheduler's job:
-- an existing job of that name and role is updated in place. Only a superuser may name
-- another role (callers are SECURITY DEFINER, run as the extension's owner).
CREATE FUNCTION bondhu.put_job(job_id text, after timestamptz) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT cron.schedule_in_database(b.jobname, bondhu.pg_cron_schedule(s.schedule, s.timezone, after),
        CASE WHEN bondhu.in_cron_zone(s.schedule, s.timezone) THEN b.command ELSE b.zoned_command END,
        current_database(), 'bondhu_scheduler', true)
    FROM bondhu.jobs() b JOIN bondhu.schedules s ON s.id = b.id
    WHERE b.id = job_id
$$;

-- For a job in another zone than pg_cron's: has a run time of its schedule come since
-- the job last took one (or, for a job that never took one, in the five minutes before
-- now)? pg_cron may start a job late, or not at all while it is down: a run time is
-- never skipped for being late, and all those missed run once. Takes them (every run
-- time up to now), so that each runs at most once however often this is called, and
-- moves the job to its next run time.
CREATE FUNCTION bondhu.take_due_run(job_id text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s bondhu.schedules;
    due_at timestamptz;
BEGIN
    SELECT * INTO s FROM bondhu.schedules t WHERE t.id = job_id AND t.paused_at IS NULL FOR UPDATE;
    IF NOT FOUND OR NOT bondhu.cron_installed() THEN
        RETURN false;
    END IF;
    PERFORM bondhu.put_job(job_id, now());
    due_at := bondhu.cron_next_run(s.schedule, coalesce(s.last_due_at, now() - interval '5 minutes'), s.timezone);
    IF due_at IS NULL OR due_at > now() THEN
        RETURN false;
    END IF;
    UPDATE bondhu.schedules t SET last_due_at = now() WHERE t.id = job_id;
    RETURN true;
END $$;

-- The command of a job in another zone than pg_cron's: runs the task when it is due.
-- (No SET search_path: the task's procedure commits; every name and operator is
-- qualified.)
CREATE PROCEDURE bondhu.run_if_due(job_id text)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT bondhu.take_due_run(job_id) THEN
        RETURN;
    ELSIF job_id OPERATOR(pg_catalog.=) 'personality_update' THEN
        CALL public.bondhu_run_update_all();
    ELSE
        CALL public.bondhu_run_cleanup();
    END IF;
END $$;

-- Each job that is scheduled or paused: its schedule and zone, what pg_cron has, and its
-- next run time.
CREATE OR REPLACE FUNCTION bondhu.scheduled_jobs() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', b.id, 'jobname', b.jobname, 'schedule', s.schedule, 'timezone', s.timezone,
               'trigger', 'cron[' || s.schedule || '] ' || s.timezone,
               'paused', s.paused_at IS NOT NULL, 'pg_cron_schedule', j.schedule, 'command', j.command,
               'active', coalesce(j.active, false),
               'next_run_time', CASE WHEN j.active THEN bondhu.cron_next_run(s.schedule, now(), s.timezone) END,
               'next_run_local_time', CASE WHEN j.active
                   THEN bondhu.cron_next_run(s.schedule, now(), s.timezone) AT TIME ZONE s.timezone END)
               ORDER BY b.id DESC), '[]'::jsonb)
    FROM bondhu.jobs() b
    LEFT JOIN bondhu.schedules s ON s.id = b.id
    LEFT JOIN bondhu.own_jobs() j ON j.id = b.id
    WHERE s.id IS NOT NULL OR j.id IS NOT NULL
$$;

-- Refuses, with 22023, a schedule that is not valid or never fires, and a zone that
-- Postgres does not know.
CREATE FUNCTION bondhu.check_schedule(argument text, schedule text, zone text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM bondhu.cron_check(argument, schedule);
    BEGIN
        PERFORM now() AT TIME ZONE zone;
    EXCEPTION WHEN invalid_parameter_value OR feature_not_supported THEN
        RAISE EXCEPTION 'bondhu_schedule: timezone "%" is not a time zone Postgres knows', zone
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a name from pg_timezone_names, such as ''Asia/Dhaka'' or ''America/New_York''.';
    END;
    IF bondhu.is_wall_clock(schedule) AND bondhu.cron_next_run(schedule, now(), zone) IS NULL THEN
        RAISE EXCEPTION 'bondhu_schedule: % "%" never fires', argument, schedule
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Its day of month does not occur in its months within the next five years.';
    END IF;
END $$;

-- The schedules bondhu_schedule() is asked for: an argument, else what the job has, else
-- its default; the zone likewise, else UTC.
CREATE FUNCTION bondhu.wanted_schedules(update_schedule text, cleanup_schedule text, zone text)
RETURNS TABLE (id text, schedule text, timezone text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT b.id,
           coalesce(CASE b.id WHEN 'personality_update' THEN update_schedule ELSE cleanup_schedule END,
                    s.schedule, b.default_schedule),
           coalesce(zone, s.timezone, 'UTC')
    FROM bondhu.jobs() b LEFT JOIN bondhu.schedules s ON s.id = b.id
$$;

-- (Re)schedules bondhu's jobs. An omitted or NULL argument keeps what the job has (at
-- first: '0 2 * * *' and '0 3 * * 0' in UTC). Schedules are read in `timezone`, which
-- pg_cron's own zone (cron.timezone, GMT on pg_cron 1.4) need not be. Resumes paused
-- jobs. Changes nothing unless every argument is valid.
CREATE FUNCTION public.bondhu_schedule(update_schedule text DEFAULT NULL, cleanup_schedule text DEFAULT NULL,
                                       timezone text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted record;
BEGIN
    FOR wanted IN SELECT * FROM bondhu.wanted_schedules(update_schedule, cleanup_schedule, bondhu_schedule.timezone) LOOP
        PERFORM bondhu.check_schedule(CASE wanted.id WHEN 'personality_update' THEN 'update_schedule'
                                                     ELSE 'cleanup_schedule' END,
                                      wanted.schedule, wanted.timezone);
    END LOOP;
    IF NOT bondhu.cron_installed() THEN
        RAISE EXCEPTION 'bondhu_schedule: pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, '
                         'run CREATE EXTENSION pg_cron, then call bondhu_schedule() again.';
    END IF;
    INSERT INTO bondhu.schedules AS s (id, schedule, timezone, last_due_at)
    SELECT w.id, w.schedule, w.timezone, now()
    FROM bondhu.wanted_schedules(update_schedule, cleanup_schedule, bondhu_schedule.timezone) w
    ON CONFLICT (id) DO UPDATE SET schedule = excluded.schedule, timezone = excluded.timezone, paused_at = NULL,
        -- a new schedule, or a paused one resumed, runs from now on: no run time before
        -- is due (take_due_run)
        last_due_at = CASE WHEN s.paused_at IS NULL AND s.schedule = excluded.schedule
                                AND s.timezone = excluded.timezone
                           THEN s.last_due_at ELSE now() END;
    PERFORM bondhu.put_job(b.id, now()) FROM bondhu.jobs() b;
    RETURN jsonb_build_object('scheduled', bondhu.scheduled_jobs(), 'pg_cron_timezone', bondhu.cron_timezone());
END $$;

COMMENT ON FUNCTION public.bondhu_schedule(text, text, text) IS
    '(Re)schedules bondhu''s two pg_cron jobs, each schedule read in timezone; NULL keeps what a job has.';

-- Pauses bondhu's jobs: removes them from pg_cron and keeps their schedules, which
-- bondhu_schedule() resumes. Health reads 'paused'.
CREATE OR REPLACE FUNCTION public.bondhu_unschedule() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed jsonb := bondhu.scheduled_jobs();
BEGIN
    UPDATE bondhu.schedules SET paused_at = now() WHERE paused_at IS NULL;
    IF bondhu.cron_installed() THEN
        PERFORM cron.unschedule(j.jobid) FROM bondhu.own_jobs() j;
    END IF;
    RETURN jsonb_build_object('unscheduled', removed);
END $$;

COMMENT ON FUNCTION public.bondhu_unschedule() IS
    'Pauses bondhu''s pg_cron jobs: removes them and keeps their schedules for bondhu_schedule() to resume.';

-- bondhu: health, for operators and monitoring.

-- The run time of the task's job (bondhu.schedules, not paused) that no run of the task
-- has succeeded since: the first time the schedule fired after the last success, when
-- that is more than an hour ago (a run may be late) and no run started since is still
-- under way (a long one). NULL otherwise, and when no run ever succeeded (nothing to
-- measure from).
CREATE FUNCTION bondhu.missed_since(task text) RETURNS timestamptz
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.due
    FROM bondhu.schedules s
    CROSS JOIN LATERAL (SELECT bondhu.cron_next_run(s.schedule, max(t.executed_at), s.timezone) AS due
                        FROM bondhu.task_runs t
                        WHERE t.task_name = task AND t.status IN ('completed', 'completed_with_errors')) d
    WHERE s.id = task AND s.paused_at IS NULL AND d.due + interval '1 hour' < now()
      AND NOT EXISTS (SELECT FROM bondhu.live_runs(task) r WHERE r.executed_at >= d.due)
$$;

-- Why the task's last run was skipped, as a warning's tail; '' when it was not.
CREATE FUNCTION bondhu.last_skip_reason(task text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT format('; its last run (%s) was skipped: %s', t.id, t.error_message)
                     FROM (SELECT * FROM bondhu.task_runs t WHERE t.task_name = task
                           ORDER BY t.executed_at DESC LIMIT 1) t
                     WHERE t.status = 'skipped'), '')
$$;

-- The seed's admin health response. Status rules:
--   unhealthy: the scheduler cannot run bondhu's jobs (pg_cron missing, its launcher
--              down, another database in cron.database_name, a job missing or
--              inactive), exactly once is at risk (a trigger, a table owner), or the
--              last personality update failed;
--   degraded:  a scheduled update or cleanup was missed (none succeeded since the first
--              time its schedule fired after the last success, plus an hour: missed_since),
--              the last update completed with errors, or the last cleanup failed;
--   paused:    bondhu_unschedule() paused the jobs, and nothing else is wrong;
--   healthy:   otherwise.
-- `problems` has one line for every reason, each with what to do.
CREATE OR REPLACE FUNCTION public.bondhu_system_health() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg bondhu.settings;
    preloaded boolean := 'pg_cron' = ANY (string_to_array(
        replace(current_setting('shared_preload_libraries'), ' ', ''), ','));
    launcher boolean := EXISTS (SELECT FROM pg_catalog.pg_stat_activity WHERE backend_type = 'pg_cron launcher');
    installed boolean := bondhu.cron_installed();
    cron_database text := current_setting('cron.database_name', true);
    paused boolean := EXISTS (SELECT FROM bondhu.schedules s WHERE s.paused_at IS NOT NULL);
    jobs jsonb := bondhu.scheduled_jobs();
    problems text[] := '{}';
    warnings text[] := '{}';
    scheduler_running boolean;
    last_update bondhu.task_runs;
    last_cleanup bondhu.task_runs;
    missed_since timestamptz;
    cleanup_missed_since timestamptz;
    status text;
    task text;
BEGIN
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    -- Runs left 'running' by a session that moved on.
    FOREACH task IN ARRAY ARRAY['personality_update', 'insights_cleanup'] LOOP
        PERFORM bondhu.mark_interrupted_runs(task);
    END LOOP;
    SELECT * INTO last_update FROM bondhu.task_runs t
    WHERE t.task_name = 'personality_update' AND t.status <> 'skipped' ORDER BY t.executed_at DESC LIMIT 1;
    SELECT * INTO last_cleanup FROM bondhu.task_runs t
    WHERE t.task_name = 'insights_cleanup' AND t.status <> 'skipped' ORDER BY t.executed_at DESC LIMIT 1;

    IF NOT preloaded THEN
        problems := problems || 'pg_cron is not in shared_preload_libraries: add it and restart the server'::text;
    ELSIF NOT launcher THEN
        problems := problems || 'the pg_cron launcher is not running: check the server log for pg_cron''s errors, and restart the server'::text;
    END IF;
    IF NOT installed THEN
        problems := problems || 'pg_cron is not installed in this database: CREATE EXTENSION pg_cron here (cron.database_name must name this database), then SELECT bondhu_schedule()'::text;
    ELSE
        IF cron_database IS DISTINCT FROM current_database() THEN
            problems := problems || format('cron.database_name is %s, not this database (%s): pg_cron runs no job of this database; set cron.database_name = %L and restart the server',
                                           coalesce(cron_database, 'not set'), current_database(), current_database());
        END IF;
        jobs := (SELECT coalesce(jsonb_agg(j || jsonb_build_object('last_run',
                     (SELECT jsonb_build_object('status', d.status, 'start_time', d.start_time,
                                                'end_time', d.end_time, 'message', d.return_message)
                      FROM cron.job_run_details d JOIN bondhu.own_jobs() o ON o.jobid = d.jobid
                      WHERE o.id = j ->> 'id' ORDER BY d.runid DESC LIMIT 1))), '[]')
                 FROM jsonb_array_elements(jobs) j);
        -- what pg_cron says of the jobs' last runs, and whether they still fire when
        -- their schedules say (cron.timezone may have changed, a run time passed by)
        problems := problems || ARRAY(
            SELECT format('the job %s failed in pg_cron at %s: see cron.job_run_details', j ->> 'jobname',
                          j #>> '{last_run,end_time}')
            FROM jsonb_array_elements(jobs) j WHERE j #>> '{last_run,status}' = 'failed');
        problems := problems || ARRAY(
            SELECT format('the job %s does not fire at the times of %s in %s (pg_cron reads its schedules in %s): SELECT bondhu_schedule()',
                          b.jobname, s.schedule, s.timezone, bondhu.cron_timezone())
            FROM bondhu.jobs() b
            JOIN bondhu.schedules s ON s.id = b.id AND s.paused_at IS NULL
            JOIN bondhu.own_jobs() o ON o.id = b.id
            WHERE o.schedule <> bondhu.pg_cron_schedule(s.schedule, s.timezone, now())
               OR o.command <> CASE WHEN bondhu.in_cron_zone(s.schedule, s.timezone)
                                    THEN b.command ELSE b.zoned_command END);
        IF NOT paused THEN
            problems := problems || ARRAY(
                SELECT format('the job %s is %s: SELECT bondhu_schedule()', b.jobname,
                              CASE WHEN j.jobid IS NULL THEN 'not scheduled' ELSE 'not active' END)
                FROM bondhu.jobs() b LEFT JOIN bondhu.own_jobs() j ON j.id = b.id
                WHERE j.jobid IS NULL OR NOT j.active);
        END IF;
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
        JOIN pg_catalog.pg_roles r ON r.oid = d.owner
        WHERE d.kind = 'TABLE' AND NOT r.rolsuper);

    IF last_update.status = 'failed' THEN
        problems := problems || format('the last personality update (%s) failed with SQLSTATE %s: see system_tasks for its error; fix the cause, then CALL bondhu_run_update_all() (the next run retries every pending insight)',
                                       last_update.id, coalesce(last_update.metadata ->> 'sqlstate', 'unknown'));
    END IF;
    -- a job the scheduler cannot run says so above
    IF scheduler_running THEN
        missed_since := bondhu.missed_since('personality_update');
        cleanup_missed_since := bondhu.missed_since('insights_cleanup');
    END IF;
    IF missed_since IS NOT NULL THEN
        warnings := warnings || format('no personality update has succeeded since its run due at %s: see cron.job_run_details for the job bondhu_personality_update%s',
                                       missed_since, bondhu.last_skip_reason('personality_update'));
    END IF;
    IF cleanup_missed_since IS NOT NULL THEN
        warnings := warnings || format('no cleanup has succeeded since its run due at %s: see cron.job_run_details for the job bondhu_insights_cleanup%s',
                                       cleanup_missed_since, bondhu.last_skip_reason('insights_cleanup'));
    END IF;
    IF last_update.status = 'completed_with_errors' THEN
        warnings := warnings || format('the last personality update (%s) completed with %s failed users: see metadata -> ''errors'' in system_tasks; their insights stay pending for the next run',
                                       last_update.id, last_update.failed_updates);
    END IF;
    IF last_cleanup.status = 'failed' THEN
        warnings := warnings || format('the last cleanup (%s) failed with SQLSTATE %s: see system_tasks for its error, then CALL bondhu_run_cleanup()',
                                       last_cleanup.id, coalesce(last_cleanup.metadata ->> 'sqlstate', 'unknown'));
    END IF;
    IF paused THEN
        warnings := warnings || 'bondhu''s jobs are paused by bondhu_unschedule(): SELECT bondhu_schedule() resumes them'::text;
    END IF;
    status := CASE
        WHEN cardinality(problems) > 0 THEN 'unhealthy'
        WHEN missed_since IS NOT NULL OR cleanup_missed_since IS NOT NULL
             OR last_update.status = 'completed_with_errors'
             OR last_cleanup.status = 'failed' THEN 'degraded'
        WHEN paused THEN 'paused'
        ELSE 'healthy' END;

    RETURN jsonb_build_object(
        'status', status,
        'scheduler_running', scheduler_running,
        'problems', to_jsonb(problems || warnings),
        'pg_cron_timezone', bondhu.cron_timezone(),
        'scheduled_jobs', jobs,
        'last_personality_update', CASE WHEN last_update.id IS NOT NULL THEN jsonb_build_object(
            'task_name', last_update.task_name, 'executed_at', last_update.executed_at,
            'users_processed', last_update.users_processed,
            'successful_updates', last_update.successful_updates,
            'failed_updates', last_update.failed_updates, 'status', last_update.status,
            'error_message', last_update.error_message) END,
        'missed_run_since', missed_since,
        'missed_cleanup_since', cleanup_missed_since,
        'last_cleanup', CASE WHEN last_cleanup.id IS NOT NULL THEN jsonb_build_object(
            'task_name', last_cleanup.task_name, 'executed_at', last_cleanup.executed_at,
            'records_processed', last_cleanup.records_processed, 'status', last_cleanup.status) END,
        'active_users_count', (SELECT count(DISTINCT i.user_id) FROM bondhu.insights i
                               WHERE i.observed_at > (SELECT bondhu.moment_before(now(), cfg.active_user_window))),
        'pending_insights', (SELECT b.pending_insights FROM bondhu.backlog() b));
END $$;

-- bondhu: metrics for monitoring, in the spirit of pgmq.metrics() and TimescaleDB's
-- job_stats; examples/postgres_exporter.yml turns them into Prometheus metrics.

-- What is pending: insights no cursor covers yet (the global cursor, or their
-- profile's), the users they belong to, and the oldest one's age. The global cursor is a
-- constant of the statement (a custom plan), so that the BRIN indexes on ingest_pos skip
-- what it covers: this reads only what came since the last completed run, and the
-- profiles that self-service updates moved ahead of it. The users are hashed, not
-- sorted (enable_sort off: the planner guesses a night's 100,000 pending insights as
-- a few thousand), and the plan is serial: a SELECT INTO never starts parallel
-- workers, and a plan made for them sorts (a night's backlog read again and again:
-- 140-155 ms sorted with a Gather that had no workers, 80-120 ms hashed; read once,
-- first after the night's insights, ~140 ms either way, within the machine's drift).
CREATE FUNCTION bondhu.backlog(OUT pending_insights bigint, OUT users_with_pending_insights bigint,
                               OUT oldest_pending_insight_at timestamptz)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_custom_plan SET enable_sort = off
SET max_parallel_workers_per_gather = 0 SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g bondhu.cursor := bondhu.global_cursor();
BEGIN
    SELECT coalesce(sum(u.insights), 0), count(*), min(u.oldest_at)
    INTO pending_insights, users_with_pending_insights, oldest_pending_insight_at
    FROM (SELECT i.user_id, count(*) AS insights, min(i.observed_at) AS oldest_at
          FROM bondhu.insights i
          -- a profile has applied an insight the global cursor does not cover only when a
          -- self-service update moved it ahead: those few are joined, not every profile
          LEFT JOIN (SELECT a.user_id, a.applied_xmin, a.applied_xmax, a.applied_xip
                     FROM public.user_personality_profiles a
                     WHERE NOT bondhu.cursor_within(a.applied_xmin, a.applied_xmax, a.applied_xip, g)) p
                 ON p.user_id = i.user_id
          WHERE i.ingest_pos >= (g).xmin_pos
            AND NOT bondhu.position_applied(i.ingest_pos, (g).xmin_pos, (g).xmax_pos, (g).xip_pos)
            AND NOT coalesce(bondhu.position_applied(i.ingest_pos, p.applied_xmin, p.applied_xmax, p.applied_xip),
                             false)
          GROUP BY i.user_id) u;
END $$;

-- Per task, over the run log (run_log_retention, 90 days by default): runs by status,
-- the last success and its age, and the last run's duration and counts.
CREATE FUNCTION bondhu.task_metrics(task text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'runs', count(*) FILTER (WHERE t.status <> 'running'),
        'failed_runs', count(*) FILTER (WHERE t.status = 'failed'),
        'runs_with_errors', count(*) FILTER (WHERE t.status = 'completed_with_errors'),
        'skipped_runs', count(*) FILTER (WHERE t.status = 'skipped'),
        'running', count(*) FILTER (WHERE t.status = 'running'),
        'last_success_at', max(t.executed_at) FILTER (WHERE t.status IN ('completed', 'completed_with_errors')),
        'seconds_since_last_success', round(extract(epoch FROM now() - max(t.executed_at)
            FILTER (WHERE t.status IN ('completed', 'completed_with_errors'))))::bigint,
        'last_run', (SELECT jsonb_build_object(
                         'task_id', l.id, 'status', l.status, 'started_at', l.executed_at,
                         'duration_seconds', l.duration_seconds, 'users_processed', l.users_processed,
                         'failed_updates', l.failed_updates, 'records_processed', l.records_processed,
                         'sqlstate', l.metadata -> 'sqlstate')
                     FROM public.system_tasks l
                     WHERE l.task_name = task AND l.status NOT IN ('skipped', 'running')
                     ORDER BY l.executed_at DESC LIMIT 1))
    FROM public.system_tasks t
    WHERE t.task_name = task
$$;

-- Everything a monitoring system scrapes, as one document. Cheap enough to call every
-- few seconds: the backlog reads only what came since the last completed run.
CREATE FUNCTION public.bondhu_metrics() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'as_of', now(),
        'tasks', jsonb_build_object('personality_update', bondhu.task_metrics('personality_update'),
                                    'insights_cleanup', bondhu.task_metrics('insights_cleanup')),
        'backlog', jsonb_build_object(
            'pending_insights', b.pending_insights,
            'users_with_pending_insights', b.users_with_pending_insights,
            'oldest_pending_insight_age_seconds',
                round(extract(epoch FROM now() - b.oldest_pending_insight_at))::bigint),
        'last_24h', (SELECT jsonb_build_object(
                         'insights_processed', coalesce(sum((t.metadata ->> 'insights_processed')::bigint), 0),
                         'rejected_insights', coalesce(sum((t.metadata ->> 'rejected_insights')::bigint), 0),
                         'rejected_by_reason', jsonb_build_object(
                             'not_an_object', coalesce(sum((t.metadata #>> '{rejected_by_reason,not_an_object}')::bigint), 0),
                             'not_a_number', coalesce(sum((t.metadata #>> '{rejected_by_reason,not_a_number}')::bigint), 0),
                             'over_100', coalesce(sum((t.metadata #>> '{rejected_by_reason,over_100}')::bigint), 0)),
                         'stale_insights', coalesce(sum((t.metadata ->> 'stale_insights')::bigint), 0),
                         'ignored_keys', coalesce(sum((t.metadata ->> 'ignored_keys')::bigint), 0),
                         'failed_updates', coalesce(sum(t.failed_updates), 0))
                     FROM bondhu.task_runs t
                     WHERE t.task_name = 'personality_update' AND t.executed_at > now() - interval '24 hours'))
    FROM bondhu.backlog() b
$$;

COMMENT ON FUNCTION public.bondhu_metrics() IS
    'Runs, failures and last success per task, the backlog of pending insights, and the last 24 hours'' rejected and stale insights.';

-- bondhu: what CREATE EXTENSION does last, and what a reinstall keeps.
--
-- DROP EXTENSION keeps the application's tables (drop_extension.sql) and, in the table
-- public.bondhu_kept_state, what operators set and what ran: the settings, the job
-- schedules and the run log. CREATE EXTENSION brings them back, and drops that table.

-- Called by DROP EXTENSION (prepare_drop): keeps the settings, the schedules and the
-- run log in public.bondhu_kept_state, readable by superusers only.
CREATE FUNCTION bondhu.keep_state() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
    grantee text;
BEGIN
    -- whatever has the name goes, with what depends on it: another role's view of that
    -- name would otherwise block DROP EXTENSION
    IF to_regclass('public.bondhu_kept_state') IS NOT NULL THEN
        EXECUTE format('DROP %s public.bondhu_kept_state CASCADE',
                       CASE (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = 'public.bondhu_kept_state'::regclass)
                            WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                            WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END);
    END IF;
    CREATE TABLE public.bondhu_kept_state AS
    SELECT (SELECT to_jsonb(s) FROM bondhu.settings s) AS settings,
           (SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]') FROM bondhu.schedules s) AS schedules,
           (SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]') FROM bondhu.task_runs t) AS runs;
    -- nobody's but superusers': default privileges (Supabase's give anon and
    -- authenticated everything new in public) are taken back
    FOR grantee IN SELECT DISTINCT a.grantee::regrole::text
                   FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
                   WHERE c.oid = 'public.bondhu_kept_state'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0 LOOP
        EXECUTE format('REVOKE ALL ON public.bondhu_kept_state FROM %s', grantee);
    END LOOP;
    REVOKE ALL ON public.bondhu_kept_state FROM PUBLIC;
    COMMENT ON TABLE public.bondhu_kept_state IS
        'bondhu''s settings, job schedules and run log, kept by DROP EXTENSION bondhu for the next CREATE EXTENSION bondhu.';
END $$;

-- bondhu: DROP EXTENSION loses nothing and leaves nothing behind.
--
-- An event trigger at the start of DROP EXTENSION reads the command (in Rust:
-- bondhu.on_drop_extension) and acts only when it names bondhu; a DROP EXTENSION of
-- any other extension, by any role, runs as if bondhu were not there. When bondhu is
-- dropped, its pg_cron jobs go (recognized as bondhu's by name, owner, database and
-- command: another role's job of the same name is not touched), and the application's
-- tables are detached (data_tables.sql), so they stay with every row; the settings, the
-- schedules and the run log are kept for the next CREATE EXTENSION (install.sql).

CREATE OR REPLACE FUNCTION bondhu.prepare_drop() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.cron_installed() THEN
        PERFORM cron.unschedule(j.jobid) FROM bondhu.own_jobs() j;
    END IF;
    PERFORM bondhu.keep_state();
    PERFORM bondhu.detach_data_tables();
END $$;

-- Refuses, with 42501, a caller who is not the signed-in owner of the profile. The
-- messages name no user: they reach the server log.
CREATE FUNCTION bondhu.require_own_profile(target uuid, function_name text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    subject text := bondhu.jwt_subject();
    subject_id uuid;
BEGIN
    IF subject IS NULL THEN
        RAISE EXCEPTION '%: no signed-in user', function_name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'request.jwt.claims has no sub claim.';
    END IF;
    BEGIN
        subject_id := subject::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION '%: the signed-in user id is not a uuid', function_name
            USING ERRCODE = 'insufficient_privilege';
    END;
    IF subject_id <> target THEN
        RAISE EXCEPTION '%: a user may only read or update their own profile', function_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- Is the calling role a superuser or a member of bondhu_operator? (calling_role once, in
-- its own subquery: compared row by row, it was called for every role, ~50 us a call.)
CREATE OR REPLACE FUNCTION bondhu.caller_is_operator() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT r.rolsuper OR pg_has_role(r.oid, 'bondhu_operator', 'MEMBER')
                     FROM pg_catalog.pg_roles r WHERE r.rolname = (SELECT bondhu.calling_role())), false)
$$;

-- When the user `target` may next make a self-service update: `min_interval` (the
-- setting self_update_min_interval, as the caller read it) after their last one; NULL
-- when they have made none. Read with the profile locked (update_personality), it holds
-- until the caller commits.
CREATE FUNCTION bondhu.next_self_update_at(target uuid, min_interval interval) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.requested_at + min_interval FROM bondhu.self_update_requests r WHERE r.user_id = target
$$;

-- Refuses a self-service update before `retry_at` (next_self_update_at) with SQLSTATE
-- PT429 (PostgREST answers HTTP 429), saying how long to wait (in its DETAIL as JSON:
-- {"retry_after_seconds", "retry_at"}).
CREATE FUNCTION bondhu.refuse_self_update(retry_at timestamptz, min_interval interval) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wait_seconds integer := greatest(1, ceil(extract(epoch FROM retry_at - clock_timestamp())))::integer;
BEGIN
    RAISE EXCEPTION 'bondhu_update_personality: too many updates, try again in % seconds', wait_seconds
        USING ERRCODE = 'PT429',
              -- for clients: PostgREST passes it on as the error's "details"
              DETAIL = jsonb_build_object('retry_after_seconds', wait_seconds, 'retry_at', retry_at)::text,
              HINT = format('A user may update their own profile once every %s.', min_interval);
END $$;

-- Records a self-service update of `target` now: the start of its next interval. Called
-- with the profile locked, so two concurrent requests are seen in turn. Now is the wall
-- clock (clock_timestamp()), not the transaction's start (now()): a slot stamped with
-- the start of a transaction held open before the call would end that much early.
CREATE FUNCTION bondhu.note_self_update(target uuid) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO bondhu.self_update_requests AS r (user_id, requested_at) VALUES (target, clock_timestamp())
    ON CONFLICT (user_id) DO UPDATE SET requested_at = excluded.requested_at;
$$;

------------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC, then granted deliberately, from one list.
------------------------------------------------------------------------------------
-- The public API (functions, procedures, and views as 'TABLE'), and who may call or read
-- each: 'operators' (bondhu_operator, service_role),
-- 'scheduler' too (bondhu_scheduler, the role of the pg_cron jobs), 'authenticated'
-- too (the function checks that the signed-in user is the profile's owner), 'everyone'
-- (a pure function of its argument).
CREATE OR REPLACE FUNCTION bondhu.public_api() RETURNS TABLE (kind text, signature text, callers text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('FUNCTION', 'public.bondhu_update_personality(uuid)', 'authenticated'),
           ('FUNCTION', 'public.bondhu_profile(uuid)', 'authenticated'),
           ('FUNCTION', 'public.bondhu_insight_problems(jsonb)', 'everyone'),
           ('TABLE', 'public.bondhu_profiles', 'authenticated'),
           ('TABLE', 'public.bondhu_profile_history', 'authenticated'),
           ('FUNCTION', 'public.bondhu_update_all()', 'operators'),
           ('PROCEDURE', 'public.bondhu_run_update_all(integer)', 'scheduler'),
           ('FUNCTION', 'public.bondhu_cleanup_insights(interval)', 'operators'),
           ('PROCEDURE', 'public.bondhu_run_cleanup(interval)', 'scheduler'),
           ('FUNCTION', 'public.bondhu_schedule(text, text, text)', 'operators'),
           ('FUNCTION', 'public.bondhu_unschedule()', 'operators'),
           ('FUNCTION', 'public.bondhu_system_health()', 'operators'),
           ('FUNCTION', 'public.bondhu_metrics()', 'operators')
$$;

-- Grants what the README's security table says, to the roles that exist now, and takes
-- back what Supabase's default privileges give anon and authenticated on new objects.
-- Run by CREATE EXTENSION and every upgrade; a superuser runs it again after creating
-- anon, authenticated or service_role later: SELECT bondhu.grant_privileges();
-- service_role is NOINHERIT on Supabase, so it gets the operators' privileges
-- directly, not through its membership in bondhu_operator.
CREATE OR REPLACE FUNCTION bondhu.grant_privileges() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
    api record;
    admin record;
    held record;
    privilege text;
    grantee text;
    operators text[] := ARRAY['bondhu_operator'];
    nobody text[] := ARRAY['PUBLIC'];
    tables constant text := 'public.chat_personality_insights, public.entertainment_interactions, '
                            'public.user_personality_profiles, public.personality_profile_history';
    -- what a procedure's run calls as its caller (its steps are SECURITY DEFINER)
    run_steps constant text := 'bondhu.refuse_transaction_block(text, text), bondhu.in_transaction_block(), '
        'bondhu.start_update_run(), bondhu.start_cleanup_run(interval), bondhu.run_step(uuid, text), '
        'bondhu.finish_run(uuid), bondhu.run_outcome(bondhu.task_runs), bondhu.take_due_run(text)';
    run_procedures constant text := 'bondhu.run_in_steps(bondhu.task_runs, text), bondhu.run_if_due(text)';
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        GRANT bondhu_operator TO service_role;
        operators := operators || 'service_role'::text;
    END IF;
    nobody := nobody || ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
                              WHERE r.rolname IN ('anon', 'authenticated'));

    -- Nobody but superusers administers bondhu's roles: a role with CREATEROLE that
    -- created one of them before CREATE EXTENSION holds ADMIN on it (PostgreSQL 16 on),
    -- and could make itself an operator.
    FOR admin IN SELECT m.roleid::regrole::text AS role_name, m.member::regrole::text AS member,
                        m.grantor::regrole::text AS grantor
               FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.member
               WHERE m.roleid IN (SELECT oid FROM pg_catalog.pg_roles WHERE rolname IN ('bondhu_operator', 'bondhu_scheduler'))
                 AND m.admin_option AND NOT r.rolsuper LOOP
        EXECUTE format('REVOKE ADMIN OPTION FOR %s FROM %s GRANTED BY %s', admin.role_name, admin.member, admin.grantor);
    END LOOP;

    -- Nothing for anybody first.
    FOREACH grantee IN ARRAY nobody LOOP
        EXECUTE format('REVOKE ALL ON ALL ROUTINES IN SCHEMA bondhu FROM %s', grantee);
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
        privilege := CASE api.kind WHEN 'TABLE' THEN 'SELECT' ELSE 'EXECUTE' END;
        EXECUTE format('GRANT %s ON %s %s TO %s', privilege, api.kind, api.signature, array_to_string(operators, ', '));
        IF api.callers = 'scheduler' THEN
            EXECUTE format('GRANT %s ON %s %s TO bondhu_scheduler', privilege, api.kind, api.signature);
        ELSIF api.callers = 'authenticated' AND 'authenticated' = ANY (nobody) THEN
            EXECUTE format('GRANT %s ON %s %s TO authenticated', privilege, api.kind, api.signature);
        ELSIF api.callers = 'everyone' THEN
            EXECUTE format('GRANT %s ON %s %s TO PUBLIC', privilege, api.kind, api.signature);
        END IF;
    END LOOP;
    FOREACH grantee IN ARRAY operators || 'bondhu_scheduler'::text LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA bondhu TO %s', grantee);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', run_steps, grantee);
        EXECUTE format('GRANT EXECUTE ON PROCEDURE %s TO %s', run_procedures, grantee);
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

    -- A trigger on a table bondhu writes runs with the rights of bondhu's functions (a
    -- superuser's): only the table's owner may create one. Supabase's default privileges
    -- give TRIGGER on every new table in public to its roles (service_role, postgres).
    -- A superuser revokes as the owner, whose grants are the root of every other one
    -- (CASCADE takes those granted on with the grant option).
    FOR held IN SELECT c.oid::regclass::text AS relation,
                       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
                FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) a
                WHERE (c.relnamespace = 'bondhu'::regnamespace
                       OR c.oid = ANY (('{' || tables || ', public.system_tasks}')::regclass[]))
                  AND a.privilege_type = 'TRIGGER' AND a.grantee <> c.relowner AND a.grantor = c.relowner LOOP
        EXECUTE format('REVOKE TRIGGER ON %s FROM %s CASCADE', held.relation, held.grantee);
    END LOOP;
END $$;

-- Deleting a profile marks its applied insights with bondhu.writing_positions, not
-- bondhu.marking_applied: only logical replication's workers have given positions
-- ignored, and bondhu's own writes are kept there too (data_tables.sql).
CREATE OR REPLACE FUNCTION bondhu.forget_profiles() RETURNS trigger
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

-- A late change positioned again is bondhu's own write, kept in logical replication's
-- workers too (data_tables.sql).
CREATE OR REPLACE FUNCTION bondhu.position_late_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET bondhu.writing_positions = on AS $$
BEGIN
    IF NEW.ingest_pos IS DISTINCT FROM bondhu.ingest_position() THEN
        EXECUTE format('UPDATE %s SET ingest_pos = bondhu.ingest_position() WHERE id = $1', TG_RELID::regclass)
        USING NEW.id;
    END IF;
    RETURN NULL;
END $$;

-- A restored state starts a new incarnation in the restore's transaction (cursors.sql).
CREATE OR REPLACE FUNCTION bondhu.pipeline_state_keep_single_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM bondhu.pipeline_state) THEN
        -- The restored state starts a new incarnation at once, in the restore's
        -- transaction (every backend forgets the one it knew when it commits): its
        -- positions and cursors may be another cluster's, or those of a copy of this
        -- one that ran ahead (a profile's cursor past our next transaction id would
        -- cover the insights we write next). All of them then sort below ours, and so
        -- do any this database wrote before the restore.
        UPDATE bondhu.pipeline_state SET
            incarnation = greatest(incarnation, NEW.incarnation) + 1,
            system_identifier = (SELECT c.system_identifier FROM pg_catalog.pg_control_system() c),
            applied_xmin = NEW.applied_xmin, applied_xmax = NEW.applied_xmax,
            applied_xip = NEW.applied_xip, advanced_at = NEW.advanced_at;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

-- Logical replication's workers leave the pipeline state alone (cursors.sql).
CREATE FUNCTION bondhu."ignore_replicated"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'ignore_replicated_wrapper';
CREATE TRIGGER ignore_replicated BEFORE INSERT OR UPDATE OR DELETE ON bondhu.pipeline_state
    FOR EACH ROW EXECUTE FUNCTION bondhu.ignore_replicated();
ALTER TABLE bondhu.pipeline_state ENABLE ALWAYS TRIGGER ignore_replicated;

-- A data-only restore under session_replication_role = replica (Supabase's recipe)
-- replaces the rows CREATE EXTENSION made (cursors.sql, settings.sql).
ALTER TABLE bondhu.pipeline_state ENABLE ALWAYS TRIGGER keep_single_row;
ALTER TABLE bondhu.settings ENABLE ALWAYS TRIGGER keep_single_row;
ALTER TABLE bondhu.settings ENABLE ALWAYS TRIGGER keep_single_row_truncate;

-- The aggregates, now parallel safe with their combine, serial and deserial functions
-- (apply.sql): an aggregate's support functions cannot be altered.
DROP AGGREGATE bondhu.insight_counts(jsonb, boolean, boolean);
DROP AGGREGATE bondhu.insight_sums(jsonb, boolean, boolean);
CREATE AGGREGATE bondhu.insight_counts(doc jsonb, fresh boolean, from_chat boolean) (
    SFUNC = bondhu.insight_totals_step, STYPE = internal, SSPACE = 128,
    FINALFUNC = bondhu.insight_counts_final,
    COMBINEFUNC = bondhu.insight_totals_combine,
    SERIALFUNC = bondhu.insight_totals_serialize, DESERIALFUNC = bondhu.insight_totals_deserialize,
    PARALLEL = SAFE
);
CREATE AGGREGATE bondhu.insight_sums(doc jsonb, fresh boolean, from_chat boolean) (
    SFUNC = bondhu.insight_totals_step, STYPE = internal, SSPACE = 128,
    FINALFUNC = bondhu.insight_sums_final,
    COMBINEFUNC = bondhu.insight_totals_combine,
    SERIALFUNC = bondhu.insight_totals_serialize, DESERIALFUNC = bondhu.insight_totals_deserialize,
    PARALLEL = SAFE
);

-- A hint on which of two dependent settings to change first (settings.sql).
CREATE TRIGGER explain_checks BEFORE UPDATE ON bondhu.settings
    FOR EACH ROW EXECUTE FUNCTION bondhu.settings_explain_checks();

-- Every backend forgets its cached incarnation when it changes (cursors.sql).
CREATE TRIGGER incarnation_changed AFTER UPDATE ON bondhu.pipeline_state
    FOR EACH ROW WHEN (OLD.incarnation IS DISTINCT FROM NEW.incarnation)
    EXECUTE FUNCTION bondhu.incarnation_changed();
CREATE TRIGGER incarnation_deleted AFTER DELETE ON bondhu.pipeline_state
    FOR EACH ROW EXECUTE FUNCTION bondhu.incarnation_changed();
ALTER TABLE bondhu.pipeline_state ENABLE ALWAYS TRIGGER incarnation_changed;
ALTER TABLE bondhu.pipeline_state ENABLE ALWAYS TRIGGER incarnation_deleted;

-- DROP EXTENSION keeps the application's tables under replica role too (drop_extension.sql).
ALTER EVENT TRIGGER bondhu_drop_extension ENABLE ALWAYS;

-- 0.3.0's jobs keep their schedules, read in pg_cron's zone as before; a run time
-- after the upgrade is due (take_due_run).
INSERT INTO bondhu.schedules (id, schedule, timezone, last_due_at)
SELECT j.id, j.schedule, bondhu.cron_timezone(), now() FROM bondhu.own_jobs() j
ON CONFLICT (id) DO NOTHING;

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

-- bondhu's SECURITY DEFINER functions write the four tables as the extension's owner (a
-- superuser). A table owned by any other role could carry that role's triggers, which
-- would then run with bondhu's privileges, or have bondhu's triggers disabled or
-- dropped. So bondhu works only on tables that superusers own: this refuses, with
-- 42501, to go on otherwise.
CREATE OR REPLACE FUNCTION bondhu.require_superuser_owned_tables() RETURNS void
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
CREATE OR REPLACE FUNCTION bondhu.attach_data_tables() RETURNS void
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

SELECT bondhu.grant_privileges();
