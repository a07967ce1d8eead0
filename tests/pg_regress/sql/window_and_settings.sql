-- The insight window (stale insights), clamping at both ends, and settings.
CREATE EXTENSION bondhu CASCADE;
\set erin '''00000000-0000-0000-0000-00000000e417'''
\set finn '''00000000-0000-0000-0000-00000000f144'''

-- Pending insights older than the 30-day window are skipped as stale, and counted.
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments) VALUES
    (:erin, now() - interval '31 days', '{"openness": 50}'),
    (:erin, now() - interval '29 days', '{"openness": 5}');
INSERT INTO entertainment_interactions (user_id, created_at, personality_insights) VALUES
    (:erin, now() - interval '40 days', '{"openness": 50}');
SELECT r -> 'insights_processed' AS n, r -> 'stale_insights' AS stale, r -> 'trait_changes' -> 'openness' AS openness
FROM bondhu_update_personality(:erin) r;
-- and they stay skipped
SELECT r -> 'insights_processed' AS n, r -> 'stale_insights' AS stale FROM bondhu_update_personality(:erin) r;

-- Clamping: never above 100, never below 0.
INSERT INTO user_personality_profiles (user_id, openness, neuroticism) VALUES (:finn, 99, 1);
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    (:finn, '{"openness": 100, "neuroticism": -100}'), (:finn, '{"openness": 100, "neuroticism": -100}');
SELECT r -> 'trait_changes' -> 'openness' AS openness, r -> 'trait_changes' -> 'neuroticism' AS neuroticism
FROM bondhu_update_personality(:finn) r;

-- Settings: one row per database, seed values by default.
SELECT * FROM bondhu.settings;
UPDATE bondhu.settings SET dampening = 0.5;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:erin, '{"extraversion": 3}');
SELECT r -> 'trait_changes' -> 'extraversion' AS extraversion FROM bondhu_update_personality(:erin) r;
UPDATE bondhu.settings SET dampening = DEFAULT;
-- A shorter window makes older pending insights stale.
UPDATE bondhu.settings SET insight_window = '1 day', insight_retention = '1 day';
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments) VALUES (:erin, now() - interval '2 days', '{"extraversion": 3}');
SELECT r -> 'insights_processed' AS n, r -> 'stale_insights' AS stale FROM bondhu_update_personality(:erin) r;
UPDATE bondhu.settings SET insight_window = DEFAULT, insight_retention = DEFAULT;

-- A window of months or years is counted on the calendar (UTC's), by runs, self-service
-- updates, bondhu_profile() and cleanup alike: an insight observed an hour before
-- 'a year ago' is stale, one an hour after it fresh, whatever the session's time zone
-- (a year counted as 365.25 days would make one of the two the other). Cleanup with the
-- window's length deletes only the stale one: nothing a later run counts as fresh.
UPDATE bondhu.settings SET insight_window = '1 year', insight_retention = '1 year';
SET TimeZone = 'America/New_York';
\set gail '''00000000-0000-0000-0000-00000000a11a'''
\set hank '''00000000-0000-0000-0000-00000000a11b'''
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments)
SELECT u, ((now() AT TIME ZONE 'UTC' - interval '1 year') AT TIME ZONE 'UTC') + h * interval '1 hour', '{"agreeableness": 1}'
FROM unnest(ARRAY[:gail, :hank]::uuid[]) u, unnest(ARRAY[-1, 1]) h;
SELECT r -> 'agreeableness' AS live_agreeableness, r -> 'pending_insights' AS pending FROM bondhu_profile(:gail) r;
SELECT r -> 'insights_processed' AS n, r -> 'stale_insights' AS stale FROM bondhu_update_personality(:gail) r;
SELECT r -> 'users_processed' AS users, r -> 'insights_processed' AS n, r -> 'stale_insights' AS stale
FROM bondhu_update_all() r;
SELECT r -> 'chat_insights_deleted' AS deleted FROM bondhu_cleanup_insights('1 year') r;
SELECT right(user_id::text, 4) AS u, count(*) AS insights_left,
       bool_and("timestamp" > bondhu.moment_before(now(), '1 year')) AS only_the_fresh_one
FROM chat_personality_insights WHERE user_id IN (:gail, :hank) GROUP BY user_id ORDER BY 1;
-- the moment itself, on fixed moments: 30 days are 720 hours across New York's change
-- to summer time (2027-03-14); 31 and 30 March less a month are the end of 28 February,
-- 28 March less a month its noon; 29 February less a year the end of 28 February
SELECT bondhu.moment_before('2027-03-15 12:00+00', '30 days') = '2027-02-13 12:00+00' AS thirty_days_utc,
       bondhu.moment_before('2027-03-30 23:00+00', '1 mon') = '2027-03-01 00:00+00' AS march_30_late,
       bondhu.moment_before('2027-03-31 01:00+00', '1 mon') = '2027-03-01 00:00+00' AS march_31_early,
       bondhu.moment_before('2027-03-28 12:00+00', '1 mon') = '2027-02-28 12:00+00' AS march_28,
       bondhu.moment_before('2028-02-29 06:00+00', '1 year') = '2027-03-01 00:00+00' AS leap_day;
-- and it never goes back as the moment goes on: every hour of two years (a leap day
-- among them), for windows of months, years, days, and months and days of both signs
SELECT count(*) AS going_back
FROM generate_series('2027-01-01 00:30+00'::timestamptz, '2029-01-01', '1 hour') t(m),
     unnest(ARRAY['1 mon', '1 year', '30 days', '2 mons 3 days 04:00', '-1 mon 40 days', '1 mon -1 day']::interval[]) s(span)
WHERE bondhu.moment_before(t.m, s.span) > bondhu.moment_before(t.m + interval '1 hour', s.span);
-- it is one expression that Postgres inlines (a call cost ~10 us on each self-update)
DO $$
DECLARE
    line text;
BEGIN
    FOR line IN EXPLAIN (VERBOSE, COSTS OFF)
        SELECT bondhu.moment_before(now(), s.insight_window) FROM bondhu.settings s LOOP
        IF line LIKE '%moment_before%' THEN
            RAISE EXCEPTION 'moment_before is not inlined: %', line;
        END IF;
    END LOOP;
END $$;
RESET TimeZone;
UPDATE bondhu.settings SET insight_window = DEFAULT, insight_retention = DEFAULT;

-- Invalid settings are refused with the constraint that says why.
\set VERBOSITY terse
UPDATE bondhu.settings SET dampening = 0;
UPDATE bondhu.settings SET dampening = 1.5;
UPDATE bondhu.settings SET dampening = NULL;
UPDATE bondhu.settings SET insight_window = '-1 day';
-- a window more than 0 as intervals compare (a month as 30 days) but with a negative
-- part would start in the future in March (a month back lands in February's 28 days):
-- refused; days and time mixed are a fixed length on UTC's calendar, and allowed
UPDATE bondhu.settings SET insight_window = '1 mon -30 days 00:00:01';
UPDATE bondhu.settings SET insight_window = '-1 mon 40 days';
UPDATE bondhu.settings SET insight_window = '2 days -1 hour' RETURNING insight_window;
UPDATE bondhu.settings SET insight_window = DEFAULT;
-- infinite intervals (PostgreSQL 17 and later; none before): a window of 'infinity'
-- counts every insight fresh, a retention of 'infinity' keeps every insight and every
-- run, an active-user window of 'infinity' counts every user; nothing fails
DO $$
DECLARE
    cleanup jsonb;
BEGIN
    IF current_setting('server_version_num')::integer >= 170000 THEN
        IF bondhu.moment_before(now(), 'infinity') <> '-infinity' THEN
            RAISE EXCEPTION 'moment_before(now(), infinity) is %', bondhu.moment_before(now(), 'infinity');
        END IF;
        UPDATE bondhu.settings SET insight_window = 'infinity', insight_retention = 'infinity',
                                   run_log_retention = 'infinity', active_user_window = 'infinity';
        cleanup := bondhu_cleanup_insights('infinity');
        IF cleanup ->> 'status' <> 'completed' OR (cleanup ->> 'records_processed')::integer <> 0 THEN
            RAISE EXCEPTION 'cleanup with infinity: %', cleanup;
        END IF;
        PERFORM bondhu_system_health();
        IF bondhu_update_all() ->> 'status' <> 'completed' THEN
            RAISE EXCEPTION 'update_all with an infinite window did not complete';
        END IF;
        UPDATE bondhu.settings SET insight_window = DEFAULT, insight_retention = DEFAULT,
                                   run_log_retention = DEFAULT, active_user_window = DEFAULT;
    END IF;
END $$;
UPDATE bondhu.settings SET insight_retention = '10 days';
UPDATE bondhu.settings SET run_log_retention = '30 days';
-- the two settings that depend on each other: the hint says which to change first
\set VERBOSITY default
UPDATE bondhu.settings SET insight_window = '120 days';
UPDATE bondhu.settings SET insight_retention = '10 days';
UPDATE bondhu.settings SET insight_window = '120 days', insight_retention = '120 days';
SELECT insight_window, insight_retention FROM bondhu.settings;
UPDATE bondhu.settings SET insight_window = DEFAULT, insight_retention = DEFAULT;
\set VERBOSITY terse
DELETE FROM bondhu.settings;
INSERT INTO bondhu.settings (dampening) VALUES (0.2);  -- as pg_dump restores it: replaces the row
SELECT count(*), min(dampening) FROM bondhu.settings;

-- A longer window must not count as fresh what a cleanup this transaction ran deletes
-- (isolation/window_during_cleanup has other sessions' runs): refused (55000). Back to
-- the cleanup's own length, or longer in a later transaction: allowed. Lengthening needs
-- READ COMMITTED (25000), to see a cleanup run that started after its snapshot;
-- shortening, or another setting, does not.
SELECT insight_window, insight_retention FROM bondhu.settings;
\set VERBOSITY default
BEGIN;
SELECT bondhu_cleanup_insights('30 days') ->> 'status' AS status;
UPDATE bondhu.settings SET insight_window = '40 days';
ROLLBACK;
BEGIN;
SELECT bondhu_cleanup_insights('30 days') ->> 'status' AS status;
UPDATE bondhu.settings SET insight_window = '20 days';
UPDATE bondhu.settings SET insight_window = '30 days';
COMMIT;
UPDATE bondhu.settings SET insight_window = '40 days';
UPDATE bondhu.settings SET insight_window = DEFAULT;
BEGIN ISOLATION LEVEL REPEATABLE READ;
UPDATE bondhu.settings SET insight_window = '20 days', dampening = 0.3;
UPDATE bondhu.settings SET insight_window = '40 days';
ROLLBACK;
\set VERBOSITY terse
SELECT insight_window, dampening FROM bondhu.settings;
-- a cleanup in a savepoint rolled back deleted nothing: a longer window is allowed; a
-- cleanup committed earlier in the same query message (one now() for both
-- transactions) does not count as this transaction's
BEGIN;
SAVEPOINT before_cleanup;
SELECT bondhu_cleanup_insights('30 days') ->> 'status' AS status;
ROLLBACK TO SAVEPOINT before_cleanup;
UPDATE bondhu.settings SET insight_window = '40 days';
ROLLBACK;
BEGIN \; SELECT bondhu_cleanup_insights('30 days') ->> 'status' AS status \; COMMIT \; UPDATE bondhu.settings SET insight_window = '40 days';
SELECT insight_window FROM bondhu.settings;
UPDATE bondhu.settings SET insight_window = DEFAULT;
