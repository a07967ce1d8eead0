-- What the app's frontend uses: the live profile, the rate limit that counts only what
-- costs, a clean read surface, as a signed-in user through PostgREST would.
CREATE EXTENSION bondhu;
DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated; END IF; END $$;
SELECT bondhu.grant_privileges();
\set amy '''00000000-0000-4000-8000-0000000000a1'''
\set bob '''00000000-0000-4000-8000-0000000000b2'''
UPDATE bondhu.settings SET self_update_min_interval = '1 hour';
-- a profile with history, then pending insights: fresh, stale, rejected, another key
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:amy, '{"openness": 10}');
SELECT bondhu_update_all() ->> 'status' AS status;
INSERT INTO chat_personality_insights (user_id, "timestamp", adjustments) VALUES
    (:amy, now(), '{"openness": 3.3, "neuroticism": -7}'),
    (:amy, now(), '{"extraversion": 100, "mood": "happy"}'),
    (:amy, now() - interval '40 days', '{"openness": 50}'),
    (:amy, now(), '{"openness": 500}');
INSERT INTO entertainment_interactions (user_id, personality_insights) VALUES (:amy, '{"agreeableness": 0.01}');

-- The live profile equals what the next update writes, exactly.
SET ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', :amy, 'role', 'authenticated')::text, false) IS NOT NULL AS signed_in;
CREATE TEMP TABLE live AS SELECT bondhu_profile(:amy) AS p;
SELECT p - 'as_of' - 'next_update_at' - 'user_id' #- '{stored,updated_at}' AS live, (p ->> 'next_update_at')::timestamptz <= now() AS may_update_now
FROM live;
SELECT bondhu_update_personality(:amy) -> 'insights_processed' AS applied;
SELECT (SELECT jsonb_build_object('openness', openness, 'conscientiousness', conscientiousness,
                                  'extraversion', extraversion, 'agreeableness', agreeableness,
                                  'neuroticism', neuroticism) FROM bondhu_profiles)
       = (SELECT jsonb_build_object('openness', p -> 'openness', 'conscientiousness', p -> 'conscientiousness',
                                    'extraversion', p -> 'extraversion', 'agreeableness', p -> 'agreeableness',
                                    'neuroticism', p -> 'neuroticism') FROM live) AS live_was_exact;
-- nothing pending now: the live profile is the stored one; the next update is in an hour
SELECT p -> 'pending_insights' AS pending, p -> 'openness' = p -> 'stored' -> 'openness' AS same,
       (p ->> 'next_update_at')::timestamptz > now() + interval '59 minutes' AS wait_an_hour
FROM bondhu_profile(:amy) p;

-- The rate limit counts what costs: with nothing pending an update uses no slot (and
-- says so); with something pending inside the hour it is refused with PT429 (HTTP 429)
-- and a DETAIL a client reads as JSON.
SELECT r -> 'insights_processed' AS applied FROM bondhu_update_personality(:amy) r;
RESET ROLE;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:amy, '{"openness": 1}');
SELECT requested_at AS amy_slot FROM bondhu.self_update_requests WHERE user_id = :amy \gset
SET ROLE authenticated;
\set VERBOSITY sqlstate
SELECT bondhu_update_personality(:amy);
\set VERBOSITY default
DO $$
DECLARE
    detail text;
BEGIN
    PERFORM bondhu_update_personality('00000000-0000-4000-8000-0000000000a1');
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'retry_after_seconds between 3590 and 3600: %, retry_at in an hour: %',
        (detail::jsonb ->> 'retry_after_seconds')::int BETWEEN 3590 AND 3600,
        (detail::jsonb ->> 'retry_at')::timestamptz BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes';
END $$;
-- the refused calls recorded nothing (the slot is still the first update's) and applied
-- nothing
RESET ROLE;
SELECT requested_at = :'amy_slot' AS slot_unchanged,
       (SELECT count(*) FROM personality_profile_history WHERE user_id = :amy) AS history_rows
FROM bondhu.self_update_requests WHERE user_id = :amy;
SET ROLE authenticated;
-- the live profile is not rate limited, and shows the pending insight
SELECT p -> 'pending_insights' AS pending FROM bondhu_profile(:amy) p;

-- The interval is of wall-clock time, not of transaction starts: a client that holds its
-- transaction open before calling is measured from its call. The slot is the moment of
-- the call (stamped now(), the transaction's start, it would end that much early and
-- admit a second update inside the interval)...
RESET ROLE;
UPDATE bondhu.settings SET self_update_min_interval = '2 seconds';
\set dan '''00000000-0000-4000-8000-0000000000d4'''
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:dan, '{"openness": 1}');
SELECT set_config('request.jwt.claims', json_build_object('sub', :dan, 'role', 'authenticated')::text, false) IS NOT NULL AS signed_in;
BEGIN;
SELECT pg_sleep(0.2);
SET ROLE authenticated;
SELECT bondhu_update_personality(:dan) -> 'insights_processed' AS applied;
RESET ROLE;
SELECT requested_at >= now() + interval '0.2 seconds' AS slot_is_the_call FROM bondhu.self_update_requests WHERE user_id = :dan;
COMMIT;
-- ...and a call is compared with the wall clock too: made after the interval ended, in a
-- transaction that began inside it, it applies (compared with now(), it was refused).
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:dan, '{"openness": 1}');
BEGIN;
UPDATE bondhu.self_update_requests SET requested_at = now() - interval '1 second' WHERE user_id = :dan;
SELECT pg_sleep(1.5);
SET ROLE authenticated;
SELECT bondhu_update_personality(:dan) -> 'insights_processed' AS applied;
RESET ROLE;
COMMIT;
UPDATE bondhu.settings SET self_update_min_interval = '1 hour';
SET ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', :amy, 'role', 'authenticated')::text, false) IS NOT NULL AS signed_in;

-- Another user's live profile: refused like an update of it; without a signed-in user too.
\set VERBOSITY terse
SELECT bondhu_profile(:bob);
SELECT set_config('request.jwt.claims', '', false) IS NOT NULL AS signed_out;
SELECT bondhu_profile(:amy);
SELECT bondhu_profile(NULL);
\set VERBOSITY default
-- an update without a signed-in user says why in its DETAIL, and sends no empty HINT
SELECT bondhu_update_personality(:amy);

-- The read surface: no cursor columns; the history for a chart.
SELECT set_config('request.jwt.claims', json_build_object('sub', :amy, 'role', 'authenticated')::text, false) IS NOT NULL AS signed_in;
SELECT column_name FROM information_schema.columns WHERE table_name = 'bondhu_profiles' ORDER BY ordinal_position;
SELECT count(*) AS my_rows FROM bondhu_profiles;
SELECT applied_by, insights_processed, openness FROM bondhu_profile_history ORDER BY applied_at;
RESET ROLE;
-- row level security holds through the views: bob sees nothing of amy's
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:bob, '{"openness": 1}');
SELECT bondhu_update_all() ->> 'status' AS status;
SET ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', :bob, 'role', 'authenticated')::text, false) IS NOT NULL AS signed_in;
SELECT count(*) AS bob_sees_profiles, (SELECT count(*) FROM bondhu_profile_history) AS bob_sees_history FROM bondhu_profiles;
RESET ROLE;
-- A user no run has seen yet has no profile: their own update applies their insights
-- and makes it (the "anything pending?" check looked for the profile's cursor, found no
-- profile, and answered no: 0 applied).
\set carol '''00000000-0000-4000-8000-0000000000c3'''
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:carol, '{"openness": 2}');
SET ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', :carol, 'role', 'authenticated')::text, false) IS NOT NULL AS signed_in;
SELECT count(*) AS carol_profiles, (SELECT p -> 'pending_insights' FROM bondhu_profile(:carol) p) AS pending
FROM bondhu_profiles;
SELECT u -> 'insights_processed' AS applied FROM bondhu_update_personality(:carol) u;
SELECT openness FROM bondhu_profiles;
RESET ROLE;
-- an operator reads anyone's live profile
SET ROLE bondhu_operator;
SELECT p -> 'openness' AS amy_openness FROM bondhu_profile('00000000-0000-4000-8000-0000000000a1') p;
RESET ROLE;

-- Insights checked at write time: bondhu_insight_problems(doc) is empty exactly when the
-- pipeline counts the document in full (applied, no key ignored), for every document
-- here, each the only insight of its own user.
CREATE TEMP TABLE docs (n int, doc jsonb);
INSERT INTO docs VALUES
    (1, '{"openness": 5}'), (2, '{"Openness": 5}'), (3, '{"openness": "5"}'), (4, '{"openness": 500}'),
    (5, '[1]'), (6, '5'), (7, '{"openness": 100, "neuroticism": -100}'), (8, '{}'),
    (9, '{"openness": 100.0000000000000000001}'), (10, '{"openness": -100.0}'), (11, '{"openness": 1e2}'),
    (12, '{"openness": null}'), (13, '{"openness": true}'), (14, '{"openness": {"value": 1}}'),
    (15, '{"openness": 1, "note": "x"}'), (16, '"text"'), (17, 'null'), (18, '{"openness": 1e-30}');
SELECT n, doc, bondhu_insight_problems(doc) AS problems FROM docs ORDER BY n;
INSERT INTO chat_personality_insights (user_id, adjustments)
SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, doc FROM docs;
-- each user's own update says what the pipeline made of their one document
SELECT count(*) FILTER (WHERE counted_in_full IS DISTINCT FROM no_problems) AS disagreements,
       count(*) FILTER (WHERE NOT counted_in_full) AS not_in_full, count(*) AS documents
FROM (SELECT d.n, (u ->> 'rejected_insights')::int = 0 AND (u ->> 'ignored_keys')::int = 0 AS counted_in_full,
             cardinality(bondhu_insight_problems(d.doc)) = 0 AS no_problems
      FROM docs d, bondhu_update_personality(('00000000-0000-4000-8000-' || lpad(d.n::text, 12, '0'))::uuid) u) r;
-- a CHECK constraint the app may add: a wrong document is refused at insert, with 23514
CREATE TABLE app_insights (doc jsonb CHECK (cardinality(bondhu_insight_problems(doc)) = 0));
SET ROLE authenticated;
SELECT bondhu_insight_problems('{"openness": "high"}') AS any_role_may_call;
RESET ROLE;
INSERT INTO app_insights VALUES ('{"openness": 1}');
\set VERBOSITY terse
INSERT INTO app_insights VALUES ('{"openness": 101}');
\set VERBOSITY default
