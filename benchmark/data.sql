-- Synthetic data, generated once per benchmark run into staging tables, then copied
-- into bondhu's tables and the peers' before each measurement. :users users with random
-- version 4 ids (as Supabase's auth ids are: no order to exploit), each with 20 chat and
-- 10 entertainment insights spread over the last 30 days, 3 traits a document, values
-- in [-2, 2]. Every user has a profile before a run (created at sign-up, as in the app).
CREATE FUNCTION peer.document(i integer) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(t[1 + i % 5], round((random() * 4 - 2)::numeric, 2),
                              t[1 + (i + 1) % 5], round((random() * 4 - 2)::numeric, 2),
                              t[1 + (i + 2) % 5], round((random() * 4 - 2)::numeric, 2))
    FROM (SELECT ARRAY['openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism'] AS t) n
$$;
CREATE UNLOGGED TABLE peer.users AS SELECT u, gen_random_uuid() AS user_id FROM generate_series(1, :users) u;
ALTER TABLE peer.users ADD PRIMARY KEY (u);
-- User number u's id.
CREATE FUNCTION peer.user_id(n integer) RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT user_id FROM peer.users WHERE u = n
$$;
CREATE UNLOGGED TABLE peer.staging_chat AS
    SELECT us.user_id, now() - random() * interval '29 days' AS at, peer.document(i) AS doc
    FROM peer.users us, generate_series(1, 20) i;
CREATE UNLOGGED TABLE peer.staging_entertainment AS
    SELECT us.user_id, now() - random() * interval '29 days' AS at, peer.document(i) AS doc
    FROM peer.users us, generate_series(1, 10) i;
-- A realistic night: one user in five was active, with 5 new insights each (3 chat,
-- 2 entertainment).
CREATE UNLOGGED TABLE peer.staging_new_day AS
    SELECT us.user_id, now() AS at, peer.document(us.u + i) AS doc, i <= 3 AS is_chat
    FROM peer.users us, generate_series(1, 5) i
    WHERE us.u % 5 = 0;
-- Old rows for the cleanup comparison: :old_per_user chat insights a user, 91-120 days old.
CREATE UNLOGGED TABLE peer.staging_old AS
    SELECT us.user_id, now() - interval '91 days' - random() * interval '29 days' AS at,
           peer.document(i) AS doc
    FROM peer.users us, generate_series(1, :old_per_user) i;

-- Fresh copies: bondhu's tables with every insight pending and every user's profile at
-- its defaults, and the peers' tables likewise.
CREATE PROCEDURE peer.reset_bondhu(with_old boolean DEFAULT false) LANGUAGE sql AS $$
    TRUNCATE public.chat_personality_insights, public.entertainment_interactions,
             public.user_personality_profiles, public.personality_profile_history, bondhu.task_runs;
    DELETE FROM bondhu.pipeline_state;
    INSERT INTO public.user_personality_profiles (user_id) SELECT user_id FROM peer.users;
    INSERT INTO public.chat_personality_insights (user_id, "timestamp", adjustments)
        SELECT user_id, at, doc FROM peer.staging_chat;
    INSERT INTO public.entertainment_interactions (user_id, created_at, personality_insights)
        SELECT user_id, at, doc FROM peer.staging_entertainment;
    INSERT INTO public.chat_personality_insights (user_id, "timestamp", adjustments)
        SELECT user_id, at, doc FROM peer.staging_old WHERE with_old;
$$;
CREATE PROCEDURE peer.reset_peer(with_old boolean DEFAULT false, with_new_day boolean DEFAULT false) LANGUAGE sql AS $$
    TRUNCATE peer.chat, peer.entertainment, peer.profiles;
    INSERT INTO peer.profiles (user_id) SELECT user_id FROM peer.users;
    INSERT INTO peer.chat (user_id, "timestamp", adjustments) SELECT user_id, at, doc FROM peer.staging_chat;
    INSERT INTO peer.entertainment (user_id, created_at, personality_insights)
        SELECT user_id, at, doc FROM peer.staging_entertainment;
    INSERT INTO peer.chat (user_id, "timestamp", adjustments) SELECT user_id, at, doc FROM peer.staging_old WHERE with_old;
    INSERT INTO peer.chat (user_id, "timestamp", adjustments)
        SELECT user_id, at, doc FROM peer.staging_new_day WHERE with_new_day AND is_chat;
    INSERT INTO peer.entertainment (user_id, created_at, personality_insights)
        SELECT user_id, at, doc FROM peer.staging_new_day WHERE with_new_day AND NOT is_chat;
$$;
-- The peers' statements write only the profiles: a fresh copy of those is enough.
CREATE PROCEDURE peer.reset_peer_profiles() LANGUAGE sql AS $$
    TRUNCATE peer.profiles;
    INSERT INTO peer.profiles (user_id) SELECT user_id FROM peer.users;
$$;
CREATE PROCEDURE peer.add_new_day() LANGUAGE sql AS $$
    INSERT INTO public.chat_personality_insights (user_id, "timestamp", adjustments)
        SELECT user_id, at, doc FROM peer.staging_new_day WHERE is_chat;
    INSERT INTO public.entertainment_interactions (user_id, created_at, personality_insights)
        SELECT user_id, at, doc FROM peer.staging_new_day WHERE NOT is_chat;
$$;
-- The floor under any nightly run that keeps bondhu's record: the night's writes alone,
-- on bondhu's tables. One UPDATE of the active users' five traits and one history row
-- each, with no insight read, as one statement; the count of history rows written.
CREATE FUNCTION peer.night_writes() RETURNS bigint LANGUAGE sql AS $$
    WITH active AS (SELECT DISTINCT user_id FROM peer.staging_new_day),
    updated AS (
        UPDATE public.user_personality_profiles p
        SET openness = p.openness + 0.01, conscientiousness = p.conscientiousness + 0.01,
            extraversion = p.extraversion + 0.01, agreeableness = p.agreeableness + 0.01,
            neuroticism = p.neuroticism + 0.01, updated_at = now()
        FROM active a WHERE p.user_id = a.user_id
        RETURNING p.*
    ), written AS (
        INSERT INTO public.personality_profile_history
            (user_id, applied_at, task_id, trigger, insights_processed,
             openness_before, openness_after, conscientiousness_before, conscientiousness_after,
             extraversion_before, extraversion_after, agreeableness_before, agreeableness_after,
             neuroticism_before, neuroticism_after)
        SELECT u.user_id, now(), NULL, 'update_all', 5, u.openness - 0.01, u.openness,
               u.conscientiousness - 0.01, u.conscientiousness, u.extraversion - 0.01, u.extraversion,
               u.agreeableness - 0.01, u.agreeableness, u.neuroticism - 0.01, u.neuroticism
        FROM updated u
        RETURNING 1
    )
    SELECT count(*) FROM written
$$;
