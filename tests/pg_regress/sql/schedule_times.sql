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

-- Schedules in the operator's zone (bondhu_schedule(..., timezone)): when that zone is
-- not pg_cron's, pg_cron gets the minute and hour, in its zone, of the schedule's next
-- run, every day; the job runs the task only when due and then moves itself on. Here
-- pg_cron's zone is GMT, as pg_cron 1.4 has it and 1.6 by default.
SELECT zone, schedule, after, bondhu.pg_cron_schedule(schedule, zone, after::timestamptz) AS pg_cron_schedule
FROM (VALUES
    -- UTC is pg_cron's zone: the schedule as it is
    ('UTC', '0 2 * * *', '2026-11-25 03:00+00'),
    ('Etc/UTC', '15 4 * * 1-5', '2026-11-25 03:00+00'),
    -- a fixed offset: 2 AM in Dhaka is 20:00 GMT the day before
    ('Asia/Dhaka', '0 2 * * *', '2026-11-25 00:00+00'),
    -- a half-hour offset: 2 AM in Kolkata is 20:30 GMT
    ('Asia/Kolkata', '0 2 * * *', '2026-11-25 00:00+00'),
    -- New York in winter (EST, UTC-5): 07:00 GMT
    ('America/New_York', '0 2 * * *', '2026-11-25 00:00+00'),
    -- spring forward: 2:30 AM is skipped on 8 March 2026, so the run is at the jump,
    -- 3:00 AM EDT = 07:00 GMT; the day after, 2:30 AM EDT = 06:30 GMT
    ('America/New_York', '30 2 * * *', '2026-03-07 12:00+00'),
    ('America/New_York', '30 2 * * *', '2026-03-08 07:00+00'),
    -- fall back: 1:30 AM comes twice on 1 November 2026; the first, 05:30 GMT, then the
    -- next day's 1:30 AM EST, 06:30 GMT
    ('America/New_York', '30 1 * * *', '2026-10-31 12:00+00'),
    ('America/New_York', '30 1 * * *', '2026-11-01 05:30+00'),
    -- every 30 seconds and @reboot have no wall clock: as they are
    ('Asia/Dhaka', '30 seconds', '2026-11-25 00:00+00'),
    ('Asia/Dhaka', '@reboot', '2026-11-25 00:00+00')) AS c(zone, schedule, after);
-- A job is due when a run time of its schedule, in its zone, is at most five minutes
-- old (pg_cron may start a job late): the stale daily firings of a weekly schedule are
-- not due.
SELECT schedule, zone, fired_at,
       bondhu.cron_next_run(schedule, fired_at::timestamptz - interval '5 minutes', zone) <= fired_at::timestamptz AS due
FROM (VALUES
    ('0 2 * * *', 'America/New_York', '2026-11-25 07:00:00+00'),
    ('0 2 * * *', 'America/New_York', '2026-11-25 07:03:10+00'),
    ('0 2 * * *', 'America/New_York', '2026-11-25 07:06:00+00'),
    ('0 2 * * 0', 'Asia/Dhaka', '2026-11-28 20:00:00+00'),
    ('0 2 * * 0', 'Asia/Dhaka', '2026-11-29 20:00:00+00'),
    -- 1:30 AM comes twice on 1 November 2026 in New York: due the first time (05:30
    -- GMT), not the second (06:30 GMT, where the job's daily pg_cron time then is)
    ('30 1 * * *', 'America/New_York', '2026-11-01 05:30:00+00'),
    ('30 1 * * *', 'America/New_York', '2026-11-01 06:30:00+00')) AS c(schedule, zone, fired_at);
