-- ALTER EXTENSION bondhu UPDATE from 0.2.0, whose jobs ran as the installing superuser:
-- the same schedules, active or not, now run as bondhu_scheduler; applied insights stay
-- applied, pending ones are applied once.
CREATE EXTENSION pg_cron;
CREATE EXTENSION bondhu VERSION '0.2.0';
SELECT bondhu_schedule('0 5 * * *') IS NOT NULL AS scheduled;
SELECT cron.alter_job(jobid, active => false) IS NULL AS paused FROM cron.job WHERE jobname = 'bondhu_insights_cleanup';
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES ('00000000-0000-0000-0000-000000000001', '{"openness": 10}');
SELECT bondhu_update_all() ->> 'insights_processed' AS applied_by_0_2_0;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES ('00000000-0000-0000-0000-000000000001', '{"openness": 10}');
SELECT jobname, username = current_user AS as_installer, schedule, active FROM cron.job ORDER BY 1;
ALTER EXTENSION bondhu UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'bondhu';
SELECT jobname, username, schedule, active FROM cron.job ORDER BY 1;
SELECT bondhu_update_all() ->> 'insights_processed' AS applied_after_upgrade;
SELECT openness FROM user_personality_profiles;
DROP EXTENSION bondhu;
DROP TABLE chat_personality_insights, entertainment_interactions, user_personality_profiles, personality_profile_history,
    bondhu_kept_state;
DROP FUNCTION bondhu_uninstalled_insight(), bondhu_uninstalled_profile();
DROP EXTENSION pg_cron;
