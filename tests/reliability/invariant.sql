-- Nothing lost, nothing counted twice: after a final update, every profile equals
-- 50 + 0.1 x the sum of all its insights (the tests keep values away from 0 and 100),
-- and the history accounts for every insight exactly once. Prints one line:
-- "users=<n> insights=<n> wrong_profiles=<n> history_insights=<n>".
\pset format unaligned
\pset tuples_only on
WITH sums AS (
    SELECT user_id, sum((doc ->> 'openness')::numeric) AS openness, count(*) AS n
    FROM bondhu.insights GROUP BY user_id
)
SELECT format('users=%s insights=%s wrong_profiles=%s history_insights=%s',
              (SELECT count(*) FROM sums),
              (SELECT sum(n) FROM sums),
              (SELECT count(*) FROM sums s LEFT JOIN user_personality_profiles p USING (user_id)
               WHERE p.openness IS DISTINCT FROM (50 + 0.1 * s.openness)::double precision),
              (SELECT coalesce(sum(insights_processed), 0) FROM personality_profile_history));
