-- bondhu: DROP EXTENSION loses nothing and leaves nothing behind.
--
-- An event trigger at the start of DROP EXTENSION reads the command (in Rust:
-- bondhu.on_drop_extension) and acts only when it names bondhu; a DROP EXTENSION of
-- any other extension, by any role, runs as if bondhu were not there. When bondhu is
-- dropped, its pg_cron jobs go (recognized as bondhu's by name, owner, database and
-- command: another role's job of the same name is not touched), and the application's
-- tables are detached (data_tables.sql), so they stay with every row; the settings, the
-- schedules and the run log are kept for the next CREATE EXTENSION (install.sql).

CREATE FUNCTION bondhu.prepare_drop() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF bondhu.cron_installed() THEN
        PERFORM cron.unschedule(j.jobid) FROM bondhu.own_jobs() j;
    END IF;
    PERFORM bondhu.keep_state();
    PERFORM bondhu.detach_data_tables();
END $$;

CREATE EVENT TRIGGER bondhu_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION bondhu.on_drop_extension();
-- also under session_replication_role = replica (restore and migration scripts set it):
-- otherwise the application's tables would be dropped as members, with their rows
ALTER EVENT TRIGGER bondhu_drop_extension ENABLE ALWAYS;
