-- Synthetic data, generated once per benchmark run into staging tables, then copied
-- into bondhu's tables and the peers' before each measurement. :users users, each with
-- 20 chat and 10 entertainment insights spread over the last 30 days, 3 traits a
-- document, values in [-2, 2].
CREATE FUNCTION peer.document(i integer) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(t[1 + i % 5], round((random() * 4 - 2)::numeric, 2),
                              t[1 + (i + 1) % 5], round((random() * 4 - 2)::numeric, 2),
                              t[1 + (i + 2) % 5], round((random() * 4 - 2)::numeric, 2))
    FROM (SELECT ARRAY['openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism'] AS t) n
$$;
CREATE FUNCTION peer.user_id(u integer) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid
$$;
CREATE UNLOGGED TABLE peer.staging_chat AS
    SELECT peer.user_id(u) AS user_id, now() - random() * interval '29 days' AS at, peer.document(i) AS doc
    FROM generate_series(1, :users) u, generate_series(1, 20) i;
CREATE UNLOGGED TABLE peer.staging_entertainment AS
    SELECT peer.user_id(u) AS user_id, now() - random() * interval '29 days' AS at, peer.document(i) AS doc
    FROM generate_series(1, :users) u, generate_series(1, 10) i;
-- One day of new insights: a chat insight for two users in three, an entertainment one
-- for one in three (1/30 of the volume).
CREATE UNLOGGED TABLE peer.staging_new_day AS
    SELECT peer.user_id(u) AS user_id, now() AS at, peer.document(u) AS doc, u % 3 <> 0 AS is_chat
    FROM generate_series(1, :users) u;
-- Old rows for the cleanup comparison: :old_per_user chat insights a user, 91-120 days old.
CREATE UNLOGGED TABLE peer.staging_old AS
    SELECT peer.user_id(u) AS user_id, now() - interval '91 days' - random() * interval '29 days' AS at,
           peer.document(i) AS doc
    FROM generate_series(1, :users) u, generate_series(1, :old_per_user) i;

-- Fresh copies: bondhu's tables with every insight pending, and the peers' tables.
CREATE PROCEDURE peer.reset_bondhu(with_old boolean DEFAULT false) LANGUAGE sql AS $$
    TRUNCATE public.chat_personality_insights, public.entertainment_interactions,
             public.user_personality_profiles, public.personality_profile_history, bondhu.task_runs;
    DELETE FROM bondhu.pipeline_state;
    INSERT INTO public.chat_personality_insights (user_id, "timestamp", adjustments)
        SELECT user_id, at, doc FROM peer.staging_chat;
    INSERT INTO public.entertainment_interactions (user_id, created_at, personality_insights)
        SELECT user_id, at, doc FROM peer.staging_entertainment;
    INSERT INTO public.chat_personality_insights (user_id, "timestamp", adjustments)
        SELECT user_id, at, doc FROM peer.staging_old WHERE with_old;
$$;
CREATE PROCEDURE peer.reset_peer(with_old boolean DEFAULT false) LANGUAGE sql AS $$
    TRUNCATE peer.chat, peer.entertainment, peer.profiles;
    INSERT INTO peer.chat (user_id, "timestamp", adjustments) SELECT user_id, at, doc FROM peer.staging_chat;
    INSERT INTO peer.entertainment (user_id, created_at, personality_insights)
        SELECT user_id, at, doc FROM peer.staging_entertainment;
    INSERT INTO peer.chat (user_id, "timestamp", adjustments) SELECT user_id, at, doc FROM peer.staging_old WHERE with_old;
$$;
CREATE PROCEDURE peer.add_new_day() LANGUAGE sql AS $$
    INSERT INTO public.chat_personality_insights (user_id, "timestamp", adjustments)
        SELECT user_id, at, doc FROM peer.staging_new_day WHERE is_chat;
    INSERT INTO public.entertainment_interactions (user_id, created_at, personality_insights)
        SELECT user_id, at, doc FROM peer.staging_new_day WHERE NOT is_chat;
$$;
