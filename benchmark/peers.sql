-- The peers bondhu is measured against, on copies of the same data in schema peer:
-- plain tables as the original app's migrations made them (primary key and a user_id
-- index), the seed's per-user algorithm in PL/pgSQL, and the set-based statement a DBA
-- would write.
CREATE SCHEMA IF NOT EXISTS peer;

CREATE TABLE peer.chat (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    session_id uuid,
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    adjustments jsonb NOT NULL,
    message_context text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON peer.chat (user_id);
CREATE TABLE peer.entertainment (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    personality_insights jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON peer.entertainment (user_id);
CREATE TABLE peer.profiles (
    user_id uuid PRIMARY KEY,
    openness double precision NOT NULL DEFAULT 50,
    conscientiousness double precision NOT NULL DEFAULT 50,
    extraversion double precision NOT NULL DEFAULT 50,
    agreeableness double precision NOT NULL DEFAULT 50,
    neuroticism double precision NOT NULL DEFAULT 50,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every insight of the last 30 days, as the seed reads them.
CREATE VIEW peer.window_insights AS
    SELECT user_id, adjustments AS doc FROM peer.chat WHERE "timestamp" > now() - interval '30 days'
    UNION ALL
    SELECT user_id, personality_insights FROM peer.entertainment
    WHERE created_at > now() - interval '30 days' AND personality_insights IS NOT NULL;

-- (2) The set-based statement: aggregate the window per user, upsert the profiles.
CREATE FUNCTION peer.set_based_update() RETURNS bigint LANGUAGE sql AS $$
    WITH sums AS (
        SELECT user_id,
               coalesce(sum((doc ->> 'openness')::numeric), 0) AS o,
               coalesce(sum((doc ->> 'conscientiousness')::numeric), 0) AS c,
               coalesce(sum((doc ->> 'extraversion')::numeric), 0) AS e,
               coalesce(sum((doc ->> 'agreeableness')::numeric), 0) AS a,
               coalesce(sum((doc ->> 'neuroticism')::numeric), 0) AS n
        FROM peer.window_insights GROUP BY user_id
    ), upserted AS (
        INSERT INTO peer.profiles AS p (user_id, openness, conscientiousness, extraversion, agreeableness, neuroticism)
        SELECT user_id, least(100, greatest(0, 50 + 0.1 * o)), least(100, greatest(0, 50 + 0.1 * c)),
               least(100, greatest(0, 50 + 0.1 * e)), least(100, greatest(0, 50 + 0.1 * a)),
               least(100, greatest(0, 50 + 0.1 * n))
        FROM sums
        ON CONFLICT (user_id) DO UPDATE SET
            openness = least(100, greatest(0, p.openness + excluded.openness - 50)),
            conscientiousness = least(100, greatest(0, p.conscientiousness + excluded.conscientiousness - 50)),
            extraversion = least(100, greatest(0, p.extraversion + excluded.extraversion - 50)),
            agreeableness = least(100, greatest(0, p.agreeableness + excluded.agreeableness - 50)),
            neuroticism = least(100, greatest(0, p.neuroticism + excluded.neuroticism - 50)),
            updated_at = now()
        RETURNING 1
    )
    SELECT count(*) FROM upserted
$$;

-- (2b) The same statement in float8, as a DBA would write it: sum((doc ->> 'openness')::float8).
-- Run every night, it re-aggregates the whole window and adds it again (double counts).
CREATE FUNCTION peer.set_based_update_float8() RETURNS bigint LANGUAGE sql AS $$
    WITH sums AS (
        SELECT user_id,
               coalesce(sum((doc ->> 'openness')::float8), 0) AS o,
               coalesce(sum((doc ->> 'conscientiousness')::float8), 0) AS c,
               coalesce(sum((doc ->> 'extraversion')::float8), 0) AS e,
               coalesce(sum((doc ->> 'agreeableness')::float8), 0) AS a,
               coalesce(sum((doc ->> 'neuroticism')::float8), 0) AS n
        FROM peer.window_insights GROUP BY user_id
    ), upserted AS (
        INSERT INTO peer.profiles AS p (user_id, openness, conscientiousness, extraversion, agreeableness, neuroticism)
        SELECT user_id, least(100, greatest(0, 50 + 0.1 * o)), least(100, greatest(0, 50 + 0.1 * c)),
               least(100, greatest(0, 50 + 0.1 * e)), least(100, greatest(0, 50 + 0.1 * a)),
               least(100, greatest(0, 50 + 0.1 * n))
        FROM sums
        ON CONFLICT (user_id) DO UPDATE SET
            openness = least(100, greatest(0, p.openness + excluded.openness - 50)),
            conscientiousness = least(100, greatest(0, p.conscientiousness + excluded.conscientiousness - 50)),
            extraversion = least(100, greatest(0, p.extraversion + excluded.extraversion - 50)),
            agreeableness = least(100, greatest(0, p.agreeableness + excluded.agreeableness - 50)),
            neuroticism = least(100, greatest(0, p.neuroticism + excluded.neuroticism - 50)),
            updated_at = now()
        RETURNING 1
    )
    SELECT count(*) FROM upserted
$$;

-- (1) The seed's algorithm: user after user, fetch their insights, sum them in a loop,
-- write the profile. Only the first max_users users (the benchmark extrapolates).
CREATE FUNCTION peer.per_user_loop(max_users integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    u uuid;
    doc jsonb;
    o numeric; c numeric; e numeric; a numeric; n numeric;
    done integer := 0;
BEGIN
    FOR u IN SELECT DISTINCT user_id FROM peer.window_insights ORDER BY user_id LIMIT max_users LOOP
        o := 0; c := 0; e := 0; a := 0; n := 0;
        FOR doc IN SELECT ch.adjustments FROM peer.chat ch
                   WHERE ch.user_id = u AND ch."timestamp" > now() - interval '30 days'
                   UNION ALL
                   SELECT en.personality_insights FROM peer.entertainment en
                   WHERE en.user_id = u AND en.created_at > now() - interval '30 days'
                     AND en.personality_insights IS NOT NULL LOOP
            o := o + coalesce((doc ->> 'openness')::numeric, 0);
            c := c + coalesce((doc ->> 'conscientiousness')::numeric, 0);
            e := e + coalesce((doc ->> 'extraversion')::numeric, 0);
            a := a + coalesce((doc ->> 'agreeableness')::numeric, 0);
            n := n + coalesce((doc ->> 'neuroticism')::numeric, 0);
        END LOOP;
        INSERT INTO peer.profiles AS p (user_id, openness, conscientiousness, extraversion, agreeableness, neuroticism)
        VALUES (u, least(100, greatest(0, 50 + 0.1 * o)), least(100, greatest(0, 50 + 0.1 * c)),
                least(100, greatest(0, 50 + 0.1 * e)), least(100, greatest(0, 50 + 0.1 * a)),
                least(100, greatest(0, 50 + 0.1 * n)))
        ON CONFLICT (user_id) DO UPDATE SET openness = excluded.openness, conscientiousness = excluded.conscientiousness,
            extraversion = excluded.extraversion, agreeableness = excluded.agreeableness,
            neuroticism = excluded.neuroticism, updated_at = now();
        done := done + 1;
    END LOOP;
    RETURN done;
END $$;

-- Per-call latency, measured inside the server, of a plain indexed read of the user's
-- insights, bondhu_profile (the live profile, with every insight pending) and then
-- bondhu_update_personality, for the given users: p50 and p99 in ms. With signed_in,
-- bondhu's two calls run as each user would make them through PostgREST: as the role
-- authenticated, with the user's id as the JWT's sub (bondhu checks it, and the update
-- counts against the user's rate limit: give each user once).
CREATE FUNCTION peer.latencies(users uuid[], signed_in boolean,
                               OUT update_p50 numeric, OUT update_p99 numeric,
                               OUT select_p50 numeric, OUT select_p99 numeric,
                               OUT profile_p50 numeric, OUT profile_p99 numeric)
LANGUAGE plpgsql AS $$
DECLARE
    u uuid;
    t0 timestamptz;
    update_ms numeric[] := '{}';
    select_ms numeric[] := '{}';
    profile_ms numeric[] := '{}';
BEGIN
    FOREACH u IN ARRAY users LOOP
        t0 := clock_timestamp();
        PERFORM count(*) FROM (SELECT adjustments FROM public.chat_personality_insights WHERE user_id = u
                               UNION ALL
                               SELECT personality_insights FROM public.entertainment_interactions WHERE user_id = u) s;
        select_ms := select_ms || (extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric;
        IF signed_in THEN
            PERFORM set_config('request.jwt.claims', json_build_object('sub', u, 'role', 'authenticated')::text, true);
            PERFORM set_config('role', 'authenticated', true);
        END IF;
        t0 := clock_timestamp();
        PERFORM public.bondhu_profile(u);
        profile_ms := profile_ms || (extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric;
        t0 := clock_timestamp();
        PERFORM public.bondhu_update_personality(u);
        update_ms := update_ms || (extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric;
        IF signed_in THEN
            PERFORM set_config('role', 'none', true);
        END IF;
    END LOOP;
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::numeric, 3)
    INTO update_p50, update_p99 FROM unnest(update_ms) x;
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::numeric, 3)
    INTO select_p50, select_p99 FROM unnest(select_ms) x;
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::numeric, 3)
    INTO profile_p50, profile_p99 FROM unnest(profile_ms) x;
END $$;
