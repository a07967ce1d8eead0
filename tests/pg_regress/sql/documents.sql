-- Insight documents: the five Big Five keys count, other keys are ignored and counted,
-- and a document that is not an object, holds a non-number or a magnitude over 100 is
-- rejected on its own, never aborting the update.
CREATE EXTENSION bondhu CASCADE;
\set carol '''00000000-0000-0000-0000-0000000ca201'''

INSERT INTO chat_personality_insights (user_id, adjustments) VALUES
    -- valid
    (:carol, '{"openness": 1}'),
    (:carol, '{"openness": 100, "neuroticism": -100}'),
    (:carol, '{"extraversion": 0.5, "humour": 3, "mood": "happy"}'),
    (:carol, '{}'),
    -- rejected: not an object
    (:carol, '[1, 2]'), (:carol, '"openness"'), (:carol, '3'), (:carol, 'null'), (:carol, 'true'),
    -- rejected: a trait that is not a number
    (:carol, '{"openness": "NaN"}'), (:carol, '{"openness": "2"}'), (:carol, '{"openness": null}'),
    (:carol, '{"openness": true}'), (:carol, '{"openness": {"value": 1}}'), (:carol, '{"openness": [1]}'),
    -- rejected: magnitude over 100
    (:carol, '{"openness": 100.0001}'), (:carol, '{"neuroticism": -101}'), (:carol, '{"openness": 1e300}'),
    (:carol, '{"agreeableness": -1e1000}');
INSERT INTO entertainment_interactions (user_id, content_type, personality_insights) VALUES
    (:carol, 'game', '{"conscientiousness": 2}'),
    (:carol, 'game', '"bad"'),
    (:carol, 'game', NULL);  -- an interaction without analysis is not an insight

SELECT r - 'updated_at' - 'user_id' AS result FROM bondhu_update_personality(:carol) r;

-- The same documents through update_all are rejected the same way and reported in the run log.
\set dave '''00000000-0000-0000-0000-00000000da7e'''
INSERT INTO chat_personality_insights (user_id, adjustments)
SELECT :dave, adjustments FROM chat_personality_insights WHERE user_id = :carol;
SELECT r ->> 'status' AS status, r -> 'insights_processed' AS n, r -> 'rejected_insights' AS rejected
FROM bondhu_update_all() r;
SELECT status, records_processed, metadata - 'failed_user_ids' AS metadata
FROM system_tasks ORDER BY executed_at DESC LIMIT 1;
SELECT openness, extraversion, neuroticism FROM user_personality_profiles WHERE user_id = :dave;

-- The document check, directly: one document at a time through the aggregates.
SELECT left(doc::text, 40) AS doc, bondhu.insight_counts(doc, true, true) AS counts,
       left(bondhu.insight_sums(doc, true, true)::text, 60) AS sums
FROM (VALUES (1, '{"openness": -2.5, "x": 1}'::jsonb), (2, '{"openness": 101}'), (3, '[]'), (4, '{"a": {"b": 1}}'),
             (5, '{"openness": 1e-400, "neuroticism": -100.0}'), (6, '{"openness": -100.0000000000000000001}'),
             (7, '{"openness": -100.00000000000000000000000001}'), (8, '{"openness": 99.99999999999999999999999999}'))
     AS v(k, doc)
GROUP BY k, doc ORDER BY k;

-- Several documents of one user: counts by kind, and exact sums, also of digits finer
-- than the fixed point (10^-24) the sums are kept in.
SELECT bondhu.insight_counts(doc, fresh, from_chat) AS counts, bondhu.insight_sums(doc, fresh, from_chat) AS sums
FROM (VALUES ('{"openness": 0.1}'::jsonb, true, true), ('{"openness": 1e-30, "x": 1, "y": 2}', true, false),
             ('{"openness": 1e-30, "extraversion": -0.000000000000000000000001}', true, true),
             ('{"openness": 2}', false, true), ('[]', true, true), (NULL, true, true)) AS v(doc, fresh, from_chat);

-- Sums finer than the fixed point are numerics that the aggregate replaces at each
-- adjustment, and frees: one user's 20,000 adjustments of 16,384 digits each (1 +
-- 10^-16383, ~140 bytes stored) leave the backend's peak memory flat (it grew ~180 MB
-- when each replaced sum was kept), and the sum is exact.
\set erin '''00000000-0000-0000-0000-0000000e7170'''
INSERT INTO chat_personality_insights (user_id, adjustments)
SELECT :erin, jsonb_build_object('openness', 1 + 1e-16383::numeric, 'extraversion', -(1 + 1e-16383::numeric))
FROM generate_series(1, 20000);
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+) kB'))[1]::bigint AS peak_kb_before \gset
SELECT (s)[1] = 20000 + 20000 * 1e-16383::numeric AS exact_sum, (s)[3] = -(20000 + 20000 * 1e-16383::numeric) AS exact_negative
FROM (SELECT bondhu.insight_sums(c.adjustments, true, true) AS s
      FROM chat_personality_insights c WHERE c.user_id = :erin) t;
SELECT r -> 'insights_processed' AS applied FROM bondhu_update_personality(:erin) r;
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+) kB'))[1]::bigint - :peak_kb_before < 40000
    AS peak_grew_under_40_mb;
SELECT openness, extraversion FROM user_personality_profiles WHERE user_id = :erin;

-- A trait with nothing to add keeps its value as stored, to the last digit: the live
-- profile shows it, and an update of another trait leaves it (both gave its first 15
-- significant digits, 50.0123456789012, and the history a change of 0).
\set finn '''00000000-0000-0000-0000-00000000f177'''
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:finn, '{"extraversion": 0.123456789012345678}');
SELECT r -> 'insights_processed' AS applied FROM bondhu_update_personality(:finn) r;
SELECT extraversion AS stored FROM user_personality_profiles WHERE user_id = :finn;
SELECT p -> 'pending_insights' AS pending, p -> 'extraversion' AS live FROM bondhu_profile(:finn) p;
INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (:finn, '{"openness": 1}');
SELECT r -> 'trait_changes' AS changes FROM bondhu_update_personality(:finn) r;
SELECT openness, extraversion AS still_stored FROM user_personality_profiles WHERE user_id = :finn;
