-- Installing bondhu where the Python pipeline's tables already exist (as its Supabase
-- migrations created them) keeps every row; old task rows stay visible in the run log;
-- what the Python pipeline already applied is not applied again.
CREATE TABLE chat_personality_insights (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    session_id uuid NOT NULL,
    timestamp timestamptz DEFAULT now(),
    adjustments jsonb NOT NULL,
    message_context text,
    created_at timestamptz DEFAULT now()
);
CREATE INDEX idx_chat_insights_user ON chat_personality_insights (user_id);
CREATE TABLE entertainment_interactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    content_type text,
    interaction_type text,
    content_id text,
    interaction_data jsonb DEFAULT '{}',
    created_at timestamptz DEFAULT now()
);
CREATE TABLE user_personality_profiles (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid UNIQUE NOT NULL,
    openness integer,
    conscientiousness numeric(5,2),
    extraversion real,
    agreeableness double precision,
    neuroticism integer,
    updated_at timestamptz DEFAULT now()
);
CREATE TABLE system_tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_name text NOT NULL,
    executed_at timestamptz DEFAULT now(),
    status text NOT NULL,
    users_processed integer,
    successful_updates integer,
    failed_updates integer,
    records_processed integer,
    error_message text,
    metadata jsonb,
    duration_seconds numeric,
    created_at timestamptz DEFAULT now()
);
\set ann '''00000000-0000-0000-0000-0000000a0001'''
\set ben '''00000000-0000-0000-0000-0000000b0002'''
INSERT INTO chat_personality_insights (user_id, session_id, adjustments, timestamp) VALUES
    (:ann, gen_random_uuid(), '{"openness": 2}', now() - interval '3 days'),
    (:ben, gen_random_uuid(), '{"openness": 4}', NULL);
INSERT INTO entertainment_interactions (user_id, content_type) VALUES (:ann, 'music');
INSERT INTO user_personality_profiles (user_id, openness, conscientiousness, extraversion, agreeableness, neuroticism)
VALUES (:ann, 61, 55.5, 48.25, 50, NULL);
INSERT INTO system_tasks (task_name, executed_at, status, users_processed, successful_updates, failed_updates, metadata, duration_seconds) VALUES
    ('personality_update', '2025-10-01 02:00+00', 'completed_with_errors', 45, 43, 2, '{"source": "apscheduler"}', 118.5),
    ('personality_update', '2025-10-02 02:00+00', 'completed', 44, 44, 0, NULL, 101.2),
    ('insights_cleanup', '2025-10-05 03:00+00', 'completed', 0, 0, 0, NULL, 3.1);

CREATE EXTENSION bondhu;
SELECT (SELECT count(*) FROM chat_personality_insights) AS chat, (SELECT count(*) FROM entertainment_interactions) AS entertainment,
       (SELECT count(*) FROM user_personality_profiles) AS profiles, (SELECT count(*) FROM system_tasks_python) AS python_tasks;
SELECT task_name, executed_at, status, users_processed, failed_updates, duration_seconds, metadata ->> 'imported_from' AS imported_from
FROM system_tasks ORDER BY executed_at;
SELECT right(user_id::text, 4) AS u, openness, conscientiousness, extraversion, agreeableness, neuroticism FROM user_personality_profiles;
-- the Python pipeline applied those insights already: nothing to do
SELECT r ->> 'users_processed' AS users, r ->> 'insights_processed' AS applied FROM bondhu_update_all() r;
-- new insights are applied once, on top of the existing profile; a missing trait starts at 50
INSERT INTO chat_personality_insights (user_id, session_id, adjustments) VALUES (:ann, gen_random_uuid(), '{"openness": 10, "neuroticism": 10}');
UPDATE entertainment_interactions SET personality_insights = '{"extraversion": 10}' WHERE user_id = :ann;
SELECT r -> 'insights_processed' AS applied, r -> 'trait_changes' -> 'openness' AS openness,
       r -> 'trait_changes' -> 'extraversion' AS extraversion, r -> 'trait_changes' -> 'neuroticism' AS neuroticism
FROM bondhu_update_personality(:ann) r;
SELECT bondhu_update_all() ->> 'insights_processed' AS nothing_left;
SELECT format_type(atttypid, atttypmod) AS openness_type FROM pg_attribute
WHERE attrelid = 'user_personality_profiles'::regclass AND attname = 'openness';
