-- bondhu: its settings, one row per database.

------------------------------------------------------------------------------------
-- Settings: one row per database, validated by CHECK constraints.
------------------------------------------------------------------------------------
CREATE TABLE bondhu.settings (
    dampening numeric NOT NULL DEFAULT 0.1
        CONSTRAINT dampening_between_0_and_1 CHECK (dampening > 0 AND dampening <= 1),
    insight_window interval NOT NULL DEFAULT '30 days'
        -- and neither its months nor the rest negative: '1 mon -30 days 00:00:01' is
        -- more than 0 as intervals compare (a month as 30 days), but in March (a month
        -- back lands in February's 28 days) its window would start in the future, and
        -- every pending insight would be stale; 'infinity' (17 and later): none is
        CONSTRAINT insight_window_positive CHECK (insight_window > interval '0'
            AND CASE WHEN isfinite(insight_window)
                     THEN date_trunc('month', insight_window) >= interval '0'
                          AND insight_window - date_trunc('month', insight_window) >= interval '0'
                     ELSE true END),
    active_user_window interval NOT NULL DEFAULT '7 days'
        CONSTRAINT active_user_window_positive CHECK (active_user_window > interval '0'),
    insight_retention interval NOT NULL DEFAULT '90 days'
        CONSTRAINT insight_retention_covers_insight_window CHECK (insight_retention >= insight_window),
    run_log_retention interval NOT NULL DEFAULT '90 days'
        CONSTRAINT run_log_retention_at_least_90_days CHECK (run_log_retention >= interval '90 days'),
    self_update_min_interval interval NOT NULL DEFAULT '60 seconds'
        CONSTRAINT self_update_min_interval_not_negative CHECK (self_update_min_interval >= interval '0')
);
COMMENT ON TABLE bondhu.settings IS
    'bondhu settings for this database (one row). Change with UPDATE bondhu.settings SET ...; reset a value with SET col = DEFAULT.';
CREATE UNIQUE INDEX settings_single_row ON bondhu.settings ((true));

-- A restore (pg_restore, or a data-only script) copies this configuration table after
-- CREATE EXTENSION has already inserted the default row: an insert into the table
-- overwrites that row.
CREATE FUNCTION bondhu.settings_keep_single_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM bondhu.settings) THEN
            UPDATE bondhu.settings SET
                dampening = NEW.dampening,
                insight_window = NEW.insight_window,
                active_user_window = NEW.active_user_window,
                insight_retention = NEW.insight_retention,
                run_log_retention = NEW.run_log_retention,
                self_update_min_interval = NEW.self_update_min_interval;
            RETURN NULL;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'bondhu.settings must keep its one row'
        USING ERRCODE = 'restrict_violation',
              HINT = 'Reset a value with UPDATE bondhu.settings SET <column> = DEFAULT.';
END $$;
CREATE TRIGGER keep_single_row BEFORE INSERT OR DELETE ON bondhu.settings
    FOR EACH ROW EXECUTE FUNCTION bondhu.settings_keep_single_row();
CREATE TRIGGER keep_single_row_truncate BEFORE TRUNCATE ON bondhu.settings
    FOR EACH STATEMENT EXECUTE FUNCTION bondhu.settings_keep_single_row();
-- also under session_replication_role = replica: a data-only restore (Supabase's
-- recipe sets it) brings the dumped row too
ALTER TABLE bondhu.settings ENABLE ALWAYS TRIGGER keep_single_row;
ALTER TABLE bondhu.settings ENABLE ALWAYS TRIGGER keep_single_row_truncate;
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
CREATE TRIGGER explain_checks BEFORE UPDATE ON bondhu.settings
    FOR EACH ROW EXECUTE FUNCTION bondhu.settings_explain_checks();
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
INSERT INTO bondhu.settings DEFAULT VALUES;
SELECT pg_catalog.pg_extension_config_dump('bondhu.settings', '');

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
