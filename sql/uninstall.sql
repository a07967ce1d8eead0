-- bondhu: DROP EXTENSION loses nothing and leaves nothing behind.
--
-- At the start of any DROP EXTENSION (an event trigger cannot see which extensions the
-- command names) bondhu sets its pg_cron jobs aside and detaches the application's
-- tables (data.sql). If bondhu is still there at the end, another extension was
-- dropped: both are put back as they were. If bondhu was dropped, its end trigger went
-- with it: the tables stay, with every row, and no job is left to fail every night.

CREATE FUNCTION bondhu.before_drop_extension() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.cron_installed() THEN
        PERFORM set_config('bondhu.jobs_set_aside', bondhu.scheduled_jobs()::text, true);
        PERFORM cron.unschedule(j.jobid) FROM cron.job j JOIN bondhu.jobs() b ON b.jobname = j.jobname;
    END IF;
    PERFORM bondhu.detach_data_tables();
    PERFORM set_config('bondhu.tables_detached', 'on', true);
END $$;

CREATE FUNCTION bondhu.after_drop_extension() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    jobs jsonb := nullif(current_setting('bondhu.jobs_set_aside', true), '')::jsonb;
BEGIN
    IF current_setting('bondhu.tables_detached', true) = 'on' THEN
        PERFORM bondhu.attach_data_tables(false);
    END IF;
    PERFORM set_config('bondhu.tables_detached', '', true);
    PERFORM set_config('bondhu.jobs_set_aside', '', true);
    IF jobs IS NOT NULL AND bondhu.cron_installed() THEN
        PERFORM cron.alter_job(cron.schedule(j ->> 'jobname', j ->> 'schedule', j ->> 'command'),
                               active => (j ->> 'active')::boolean)
        FROM jsonb_array_elements(jobs) j;
    END IF;
END $$;

CREATE EVENT TRIGGER bondhu_before_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION bondhu.before_drop_extension();
CREATE EVENT TRIGGER bondhu_after_drop_extension ON ddl_command_end
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION bondhu.after_drop_extension();
