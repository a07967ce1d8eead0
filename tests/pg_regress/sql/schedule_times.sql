-- Health's next_run_time is when pg_cron fires: the schedule's fields as wall clock time
-- in pg_cron's zone (GMT up to pg_cron 1.4, cron.timezone from 1.5), daylight-saving
-- changes included.
CREATE EXTENSION bondhu;
SELECT bondhu.cron_timezone() AS zone_here;
SELECT zone, schedule, after, bondhu.cron_next_run(schedule, after::timestamptz, zone) AT TIME ZONE 'UTC' AS next_utc
FROM (VALUES
    -- a plain day
    ('UTC', '0 2 * * *', '2026-11-25 03:00+00'),
    -- a fixed offset: 2 AM in Dhaka (UTC+6) is 20:00 UTC the day before
    ('Asia/Dhaka', '0 2 * * *', '2026-11-25 00:00+00'),
    -- spring forward in New York (2 AM becomes 3 AM on 8 March 2026): 2:30 AM never
    -- comes; pg_cron runs it when the clock jumps, 07:00 UTC
    ('America/New_York', '30 2 * * *', '2026-03-07 12:00+00'),
    -- the next day, back to 06:30 UTC (EDT)
    ('America/New_York', '30 2 * * *', '2026-03-08 12:00+00'),
    -- fall back (2 AM becomes 1 AM on 1 November 2026): 1:30 AM comes twice; pg_cron runs
    -- it the first time, 05:30 UTC (EDT), not 06:30 (EST)
    ('America/New_York', '30 1 * * *', '2026-10-31 12:00+00'),
    -- after the first one: the next day's
    ('America/New_York', '30 1 * * *', '2026-11-01 05:31+00'),
    -- a schedule that never fires
    ('UTC', '0 2 30 2 *', '2026-11-25 00:00+00'),
    -- @reboot: no next time
    ('UTC', '@reboot', '2026-11-25 00:00+00')) AS c(zone, schedule, after);
