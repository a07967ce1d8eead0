-- The core semantics: the seed's worked example, exactly once, missing profiles,
-- nothing pending, NULL input.
CREATE EXTENSION bondhu CASCADE;
\set alice '''00000000-0000-0000-0000-00000000a11c'''
\set bob '''00000000-0000-0000-0000-000000000b0b'''

-- The seed's example: chat +2.0 openness, +1.5 conscientiousness; entertainment +1.0
-- openness, -0.5 extraversion. Profile missing: every trait starts at 50.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    (:alice, '{"openness": 2.0}'), (:alice, '{"conscientiousness": 1.5}');
INSERT INTO entertainment_interactions (user_id, content_type, personality_insights) VALUES
    (:alice, 'music', '{"openness": 1.0}'), (:alice, 'video', '{"extraversion": -0.5}');
SELECT count(*) AS profiles_before FROM user_personality_profiles;
CREATE TEMP TABLE first_update AS SELECT bondhu_update_personality(:alice) AS r;
SELECT jsonb_pretty(r - 'updated_at') AS result FROM first_update;
SELECT (r ->> 'updated_at')::timestamptz = updated_at AS updated_at_matches
FROM first_update, user_personality_profiles WHERE user_id = :alice;
SELECT openness, conscientiousness, extraversion, agreeableness, neuroticism
FROM user_personality_profiles WHERE user_id = :alice;

-- Again, and through update_all: nothing is applied twice.
SELECT r -> 'insights_processed' AS n, r -> 'trait_changes' -> 'openness' AS openness
FROM bondhu_update_personality(:alice) r;
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users, r -> 'insights_processed' AS n
FROM bondhu_update_all() r;
SELECT openness, conscientiousness, extraversion FROM user_personality_profiles WHERE user_id = :alice;

-- A new insight is applied once, by whichever update comes first.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:alice, '{"openness": 10}');
SELECT r ->> 'status' AS status, r -> 'users_processed' AS users, r -> 'insights_processed' AS n
FROM bondhu_update_all() r;
SELECT r -> 'insights_processed' AS n FROM bondhu_update_personality(:alice) r;
SELECT openness FROM user_personality_profiles WHERE user_id = :alice;

-- The history: one row per applied update.
SELECT trigger, insights_processed, task_id IS NOT NULL AS has_task,
       openness_before, openness_after, extraversion_before, extraversion_after
FROM personality_profile_history WHERE user_id = :alice ORDER BY id;

-- A user with nothing pending gets a profile at 50 and an empty result.
SELECT r -> 'insights_processed' AS n, r -> 'trait_changes' -> 'neuroticism' AS neuroticism
FROM bondhu_update_personality(:bob) r;
SELECT openness, neuroticism FROM user_personality_profiles WHERE user_id = :bob;

-- An existing profile is the starting point.
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:bob, '{"neuroticism": -20, "agreeableness": 5}');
UPDATE user_personality_profiles SET neuroticism = 70 WHERE user_id = :bob;
SELECT r -> 'trait_changes' -> 'neuroticism' AS neuroticism, r -> 'trait_changes' -> 'agreeableness' AS agreeableness
FROM bondhu_update_personality(:bob) r;

-- Insights written in the same transaction as the update wait for the next one
-- (the update applies what was committed when it started).
BEGIN;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:bob, '{"openness": 1}');
SELECT r -> 'insights_processed' AS n FROM bondhu_update_personality(:bob) r;
COMMIT;
SELECT r -> 'insights_processed' AS n FROM bondhu_update_personality(:bob) r;

-- Errors carry an SQLSTATE.
\set VERBOSITY sqlstate
SELECT bondhu_update_personality(NULL);
SELECT bondhu_update_personality('not-a-uuid');
\set VERBOSITY default
SELECT bondhu_update_personality(NULL);
