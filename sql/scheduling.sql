-- bondhu: pg_cron jobs and health.
--
-- Two jobs in pg_cron's cron.job when pg_cron is installed in this database:
-- bondhu_personality_update and bondhu_insights_cleanup. They run as the role
-- bondhu_scheduler, which may run the two procedures and nothing else. A job is
-- bondhu's when its name, its role (bondhu_scheduler), its database (this one) and its
-- command are bondhu's: a job another role names the same is that role's, and bondhu
-- neither reads, changes, nor removes it. pg_cron evaluates schedules in one zone for
-- the whole cluster: GMT up to 1.4, the cron.timezone setting from 1.5 on.

CREATE FUNCTION bondhu.cron_installed() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')
$$;

-- The role bondhu's jobs run as: it can log in (pg_cron connects as it, by a
-- background worker or over libpq to cron.host) and may run the two procedures (see
-- security.sql). Never a superuser.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bondhu_scheduler') THEN
        CREATE ROLE bondhu_scheduler LOGIN NOINHERIT;
    END IF;
    ALTER ROLE bondhu_scheduler LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
END $$;
COMMENT ON ROLE bondhu_scheduler IS
    'bondhu''s pg_cron jobs run as this role. It may run bondhu_run_update_all and bondhu_run_cleanup, nothing else.';

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

-- The schedules operators set, each in its own zone; kept while the jobs are paused
-- (bondhu_unschedule) and by pg_dump.
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

-- bondhu's jobs in cron.job (none without pg_cron).
CREATE FUNCTION bondhu.own_jobs()
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

-- The zone pg_cron evaluates schedules in: cron.timezone from pg_cron 1.5 on (which has
-- the setting), GMT before.
CREATE FUNCTION bondhu.cron_timezone() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('cron.timezone', true), ''), 'GMT')
$$;

-- The next time a cron schedule fires after a moment, when its fields are read as wall
-- clock time in `zone`, as pg_cron does, daylight-saving changes included: a wall clock
-- time that a change skips runs when the clock jumps; one that comes twice runs the
-- first time. NULL when the schedule never fires.
CREATE FUNCTION bondhu.cron_next_run(schedule text, after timestamptz, zone text) RETURNS timestamptz
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
CREATE FUNCTION bondhu.scheduled_jobs() RETURNS jsonb
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
CREATE FUNCTION public.bondhu_unschedule() RETURNS jsonb
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
