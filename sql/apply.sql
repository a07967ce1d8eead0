-- bondhu: insight documents, trait math, and applying a range of users' pending insights.

------------------------------------------------------------------------------------
-- Insight documents and trait math
------------------------------------------------------------------------------------
-- Every row of both insight tables, as one relation. A chat row is always an insight; an
-- interaction is one once analysed: its personality_insights is neither SQL NULL nor JSON
-- null. A run stages, and its batches count, rows rather than insights (apply_pending):
-- a count of rows reads only the tables' (user_id, ingest_pos) indexes.
CREATE VIEW bondhu.insight_rows AS
    SELECT c.user_id, 'chat'::text AS source, c.adjustments AS doc,
           coalesce(c."timestamp", c.created_at) AS observed_at, c.ingest_pos, true AS analysed
    FROM public.chat_personality_insights c
    UNION ALL
    SELECT e.user_id, 'entertainment'::text, e.personality_insights, e.created_at, e.ingest_pos,
           e.personality_insights IS NOT NULL AND e.personality_insights <> 'null'::jsonb
    FROM public.entertainment_interactions e;

-- Every insight, from both sources: the analysed rows.
CREATE VIEW bondhu.insights AS
    SELECT r.user_id, r.source, r.doc, r.observed_at, r.ingest_pos
    FROM bondhu.insight_rows r
    WHERE r.analysed;

-- What one user's pending insights add up to, in one pass over them: two aggregates
-- that share their state (Postgres computes it once), written in Rust (src/aggregate.rs,
-- the rule in src/insight.rs). Each takes the document, whether it is inside the
-- window (fresh), and whether it came from chat. A stale insight is only counted; a
-- fresh one counts or is rejected whole.
--   insight_counts: {applied, from chat, from entertainment, rejected, stale, ignored keys}
--   insight_sums:   the applied adjustments of each trait added up exactly, in the
--                   order openness, conscientiousness, extraversion, agreeableness,
--                   neuroticism (0 for a trait no insight adjusts)
-- SSPACE, the state's size, lets the planner hash the users instead of sorting every
-- insight. Parallel safe: parallel workers each sum a part of the insights, and the
-- leader combines their states (handed over as bytes).
CREATE AGGREGATE bondhu.insight_counts(doc jsonb, fresh boolean, from_chat boolean) (
    SFUNC = bondhu.insight_totals_step, STYPE = internal, SSPACE = 128,
    FINALFUNC = bondhu.insight_counts_final,
    COMBINEFUNC = bondhu.insight_totals_combine,
    SERIALFUNC = bondhu.insight_totals_serialize, DESERIALFUNC = bondhu.insight_totals_deserialize,
    PARALLEL = SAFE
);
CREATE AGGREGATE bondhu.insight_sums(doc jsonb, fresh boolean, from_chat boolean) (
    SFUNC = bondhu.insight_totals_step, STYPE = internal, SSPACE = 128,
    FINALFUNC = bondhu.insight_sums_final,
    COMBINEFUNC = bondhu.insight_totals_combine,
    SERIALFUNC = bondhu.insight_totals_serialize, DESERIALFUNC = bondhu.insight_totals_deserialize,
    PARALLEL = SAFE
);

-- Why a document would not count in full, checked as the pipeline checks it: empty when
-- it counts in full; otherwise each reason (not an object; a key that is not a trait,
-- which is ignored; a trait that is not a number or over 100 in magnitude, which rejects
-- the whole document). The verdict is the pipeline's own (insight_counts over the one
-- document); the reasons name what to fix. For the app to call before writing, or in a
-- CHECK constraint: CHECK (cardinality(bondhu_insight_problems(adjustments)) = 0).
-- SECURITY DEFINER so that any writer may call it without rights on bondhu's internals.
CREATE FUNCTION public.bondhu_insight_problems(doc jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN v.counts[4] = 0 AND v.counts[6] = 0 THEN '{}'::text[]
        WHEN jsonb_typeof(doc) <> 'object' THEN ARRAY['not an object: the document is rejected']
        ELSE coalesce(nullif(ARRAY(
            SELECT CASE WHEN e.key <> ALL (v.traits) THEN format('unknown key "%s": ignored', e.key)
                        WHEN jsonb_typeof(e.value) <> 'number'
                        THEN format('"%s" is not a number: the document is rejected', e.key)
                        ELSE format('"%s" is over 100 in magnitude: the document is rejected', e.key) END
            FROM jsonb_each(doc) e
            WHERE e.key <> ALL (v.traits) OR jsonb_typeof(e.value) <> 'number'
               OR abs((e.value #>> '{}')::numeric) > 100
            ORDER BY e.key), '{}'), ARRAY['rejected by the pipeline''s rule']) END
    FROM (SELECT bondhu.insight_counts(doc, true, true) AS counts,
                 ARRAY['openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism'] AS traits) v
$$;
COMMENT ON FUNCTION public.bondhu_insight_problems(jsonb) IS
    'Why an insight document would not count in full (empty when it does): for the app to check before writing, or in a CHECK constraint.';

-- new = clamp(current + dampening * sum, 0, 100), in exact decimal arithmetic. A trait
-- without a value (an adopted profile) starts at 50, like a missing profile. The numeric
-- expression below defines it, with the current value as its 15 significant digits (as
-- PostgreSQL turns a double into numeric: 50.3 + 0.15 is 50.45); but a trait with
-- nothing to add (a sum of 0) keeps its value as stored, clamped, rather than lose the
-- digits past the 15th at every update of the other traits. adjusted_trait_fixed_point
-- (src/trait_math.rs) computes this in integers, ~5 times faster (~0.25 us a trait where
-- numeric took ~1.4 us, and a run makes five a user), the sum of 0 included (whatever
-- the dampening), and gives NULL for other values it cannot hold exactly (the expression
-- then decides). A #[pg_test] compares them on random and edge values.
CREATE FUNCTION bondhu.adjusted_trait(current double precision, total numeric, dampening numeric)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(bondhu.adjusted_trait_fixed_point(current, total, dampening),
                    least(100, greatest(0, coalesce(current, 50)::numeric + dampening * total))::double precision)
$$;

------------------------------------------------------------------------------------
-- Applying pending insights
------------------------------------------------------------------------------------
-- The pending insights of the user `target`: those the cursor `snapshot` covers and
-- neither the cursor `covered` (the global cursor a run started from) nor, when
-- `own_cursor`, the profile's own cursor does. The profile is joined only when
-- `own_cursor`: when a self-service update may have moved it past `covered`
-- (moved_ahead), or always by a caller that holds it. Read by pending_sums, and by
-- has_pending, which stops at the first row. (No SET clause: the planner inlines it.)
CREATE FUNCTION bondhu.pending_insights(target uuid, covered bondhu.cursor, snapshot bondhu.cursor,
                                        own_cursor boolean)
RETURNS TABLE (user_id uuid, source text, doc jsonb, observed_at timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT i.user_id, i.source, i.doc, i.observed_at
    FROM bondhu.insights i
    WHERE NOT own_cursor AND i.user_id = target
      AND bondhu.position_pending(i.ingest_pos, covered, snapshot)
    UNION ALL
    SELECT i.user_id, i.source, i.doc, i.observed_at
    FROM bondhu.insights i
    JOIN public.user_personality_profiles p ON p.user_id = i.user_id
    WHERE own_cursor AND i.user_id = target
      AND bondhu.position_pending(i.ingest_pos, covered, snapshot)
      AND NOT coalesce(bondhu.position_applied(i.ingest_pos, p.applied_xmin, p.applied_xmax, p.applied_xip), false)
$$;

-- The pending insights of the user `target` (pending_insights), summed. An insight
-- observed before window_start is stale. One row when there are any: n, the counts
-- {applied, from chat, from entertainment, rejected, stale, ignored keys, rejected as
-- not an object, for a trait not a number, for a trait over 100}; d, the applied
-- adjustments of each trait added up exactly. Read by apply_pending (a user whose staged
-- totals do not hold), apply_user_pending and bondhu_profile(); a run stages everyone's
-- totals with run_pending_totals. (No SET clause: the planner inlines it into their
-- statements.)
CREATE FUNCTION bondhu.pending_sums(target uuid, covered bondhu.cursor, snapshot bondhu.cursor,
                                    own_cursor boolean, window_start timestamptz)
RETURNS TABLE (user_id uuid, n integer[], d numeric[])
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pending.user_id,
           bondhu.insight_counts(pending.doc, pending.observed_at >= window_start, pending.source = 'chat'),
           bondhu.insight_sums(pending.doc, pending.observed_at >= window_start, pending.source = 'chat')
    FROM bondhu.pending_insights(target, covered, snapshot, own_cursor) pending
    GROUP BY pending.user_id
$$;

-- Has a self-service update moved the profile of `target` past the global cursor
-- `covered`? Then its own cursor counts (pending_sums' own_cursor): has_pending,
-- bondhu_profile. False when there is no profile.
CREATE FUNCTION bondhu.moved_ahead(target uuid, covered bondhu.cursor) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM public.user_personality_profiles p
                   WHERE p.user_id = target
                     AND NOT bondhu.cursor_within(p.applied_xmin, p.applied_xmax, p.applied_xip, covered))
$$;

-- Applies the run's pending insights of `users` (in key order): those the cursor `snapshot`
-- covers and neither the cursor `covered` (the global cursor the run started from) nor
-- the profile's own cursor does; an insight observed before window_start is stale. A
-- user's totals are taken from bondhu.run_totals and used when the profile has applied
-- nothing past `covered` and the staged rows are all still pending; every other
-- user's are computed here from the insights. The caller holds the row locks of the
-- users' profiles, taken before this statement reads the profiles and insights. Returns
-- one row: how many users had pending insights (fresh, stale or rejected), and their
-- insights applied, rejected (in all and for each reason) and stale, and keys ignored.
-- Every batch runs one plan, made once a session (force_generic_plan), that looks its
-- users up by key: planning the statement with its users as constants cost ~0.9 us a
-- user for each `= ANY (users)` in it (~0.5 s for bondhu_update_all's 100,000 users),
-- and ~15 % of a night's batched run with 1,000 users a batch. Measured paired on PG18
-- (100,000 users), the plan made for the users was no faster to run: the full run took
-- 7.01 -> 6.55 s (medians of 8 pairs) and the night of 20,000 users 1.11 -> 1.08 s (of
-- 12), with take_staged_totals and lock_profiles planned once a session too.
CREATE FUNCTION bondhu.apply_pending(users uuid[], covered bondhu.cursor, snapshot bondhu.cursor,
                                     window_start timestamptz, dampening numeric, run_id uuid)
RETURNS TABLE (user_count bigint, insights_processed bigint, rejected_insights bigint, stale_insights bigint,
               ignored_keys bigint, not_an_object bigint, not_a_number bigint, over_100 bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    WITH taken AS (
        -- the totals the run staged, taken out of bondhu.run_totals
        SELECT t.user_id, t.n, t.d, t.pending_rows FROM bondhu.take_staged_totals(users) t
    ), unchanged AS (
        -- Are the batch's pending rows still the ones staged? A run's pending set of
        -- rows only shrinks (a row written after the run started has a position its
        -- snapshot does not cover; a row whose document or user changes, an interaction
        -- analysed too, gets such a position; a deleted one is gone), so when there are as
        -- many as were staged, every user still has the rows, and so the insights, that
        -- were staged: one count for the batch instead of one per user. Rows, not
        -- insights: a count of rows reads only the (user_id, ingest_pos) indexes, and
        -- an insight deleted cannot hide behind an interaction analysed meanwhile.
        SELECT (SELECT count(*) FROM bondhu.insight_rows r
                WHERE r.user_id = ANY (users) AND bondhu.position_pending(r.ingest_pos, covered, snapshot))
               = (SELECT coalesce(sum(t.pending_rows), 0) FROM taken t) AS all_users
    ), pending_now AS (
        -- otherwise how many pending rows each staged user has now, in one pass over
        -- the batch's rows
        SELECT r.user_id, count(*) AS pending_rows
        FROM bondhu.insight_rows r
        WHERE NOT (SELECT u.all_users FROM unchanged u)
          AND r.user_id = ANY (users) AND bondhu.position_pending(r.ingest_pos, covered, snapshot)
        GROUP BY r.user_id
    ), staged_totals AS (
        -- the staged totals of the users whose profile has applied nothing the run's
        -- `covered` cursor does not cover (no self-service update moved it ahead: the
        -- totals are then what computing them again would give), with the profile's
        -- values (the caller holds its lock: the values the update replaces). Each
        -- profile is looked up by its key (OFFSET 0 keeps the lookup per row): a batch
        -- reads its own users' profiles, not every profile to hash them.
        SELECT t.user_id, t.n, t.d, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism
        FROM taken t
        CROSS JOIN LATERAL (SELECT p.applied_xmin, p.applied_xmax, p.applied_xip, p.openness, p.conscientiousness,
                                   p.extraversion, p.agreeableness, p.neuroticism
                            FROM public.user_personality_profiles p WHERE p.user_id = t.user_id OFFSET 0) p
        -- and whose pending rows are still the ones staged: a row rewritten, moved,
        -- analysed or deleted since then has left the run's pending set, and the user is
        -- computed again, so that only its last version counts
        LEFT JOIN pending_now c ON c.user_id = t.user_id
        WHERE bondhu.cursor_within(p.applied_xmin, p.applied_xmax, p.applied_xip, covered)
          AND ((SELECT u.all_users FROM unchanged u) OR c.pending_rows = t.pending_rows)
    ), totals AS (
        SELECT * FROM staged_totals
        UNION ALL
        -- the rest of the batch's users, computed again: only they are looked up (the
        -- batch's users are filtered first, not every profile of the batch read)
        SELECT s.user_id, s.n, s.d, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism
        FROM unnest(users) u(user_id)
        CROSS JOIN LATERAL (SELECT p.user_id, p.openness, p.conscientiousness, p.extraversion, p.agreeableness,
                                   p.neuroticism
                            FROM public.user_personality_profiles p WHERE p.user_id = u.user_id OFFSET 0) p
        CROSS JOIN LATERAL bondhu.pending_sums(p.user_id, covered, snapshot, true, window_start) s
        WHERE u.user_id NOT IN (SELECT t.user_id FROM staged_totals t)
    ), updated AS (
        UPDATE public.user_personality_profiles p SET
            openness = bondhu.adjusted_trait(p.openness, t.d[1], dampening),
            conscientiousness = bondhu.adjusted_trait(p.conscientiousness, t.d[2], dampening),
            extraversion = bondhu.adjusted_trait(p.extraversion, t.d[3], dampening),
            agreeableness = bondhu.adjusted_trait(p.agreeableness, t.d[4], dampening),
            neuroticism = bondhu.adjusted_trait(p.neuroticism, t.d[5], dampening),
            updated_at = CASE WHEN t.n[1] > 0 THEN now() ELSE p.updated_at END,
            applied_xmin = (snapshot).xmin_pos,
            applied_xmax = (snapshot).xmax_pos,
            applied_xip = (snapshot).xip_pos
        FROM totals t
        -- the batch's profiles by key, not every profile hashed: the planner misjudges
        -- how many users the second half of totals brings
        WHERE p.user_id = t.user_id AND p.user_id = ANY (users)
        RETURNING p.user_id, t.n[1] AS applied, t.n[4] AS rejected, t.n[5] AS stale, t.n[6] AS ignored,
                  t.n[7] AS not_an_object, t.n[8] AS not_a_number, t.n[9] AS over_100,
                  -- a trait without a value (an adopted profile) was 50, as adjusted_trait counts it
                  coalesce(t.openness, 50) AS openness_before, p.openness AS openness_after,
                  coalesce(t.conscientiousness, 50) AS conscientiousness_before,
                  p.conscientiousness AS conscientiousness_after,
                  coalesce(t.extraversion, 50) AS extraversion_before, p.extraversion AS extraversion_after,
                  coalesce(t.agreeableness, 50) AS agreeableness_before, p.agreeableness AS agreeableness_after,
                  coalesce(t.neuroticism, 50) AS neuroticism_before, p.neuroticism AS neuroticism_after
    ), history AS (
        INSERT INTO public.personality_profile_history
            (user_id, applied_at, task_id, trigger, insights_processed,
             openness_before, openness_after, conscientiousness_before, conscientiousness_after,
             extraversion_before, extraversion_after, agreeableness_before, agreeableness_after,
             neuroticism_before, neuroticism_after)
        SELECT u.user_id, now(), run_id, 'update_all', u.applied,
               u.openness_before, u.openness_after, u.conscientiousness_before, u.conscientiousness_after,
               u.extraversion_before, u.extraversion_after, u.agreeableness_before, u.agreeableness_after,
               u.neuroticism_before, u.neuroticism_after
        FROM updated u
        WHERE u.applied > 0
    )
    -- the batch's counts in one row (a row a user, with its counts as JSON, was ~8 % of
    -- a run's backend time)
    SELECT count(*), coalesce(sum(u.applied), 0), coalesce(sum(u.rejected), 0), coalesce(sum(u.stale), 0),
           coalesce(sum(u.ignored), 0), coalesce(sum(u.not_an_object), 0), coalesce(sum(u.not_a_number), 0),
           coalesce(sum(u.over_100), 0)
    FROM updated u;
END $$;

-- Applies one user's pending insights (a self-service update): those the cursor
-- `snapshot` covers and neither the global cursor `covered` nor the profile's own cursor
-- does; an insight observed before window_start is stale. The caller holds the profile's
-- row lock, taken before `snapshot` was read. Returns one row when the user had pending
-- insights (fresh, stale or rejected). Written apart from the run's statement
-- (apply_pending) so that one plan, made once per session, serves every call: planning a
-- statement for each call was most of a self-service update's time (1.6 ms at p50, 0.5 ms
-- with the plan kept). The plan is generic on purpose: the planner guesses a range of
-- unknown users as thousands of insights and would otherwise plan each call again.
CREATE FUNCTION bondhu.apply_user_pending(target uuid, covered bondhu.cursor, snapshot bondhu.cursor,
                                          window_start timestamptz, dampening numeric)
RETURNS TABLE (user_id uuid, insights_processed integer, chat_insights integer,
               entertainment_insights integer, rejected_insights integer, stale_insights integer,
               ignored_keys integer, rejected_by_reason jsonb,
               traits_before double precision[], traits_after double precision[])
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    WITH totals AS (
        SELECT s.user_id, s.n, s.d, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism
        FROM public.user_personality_profiles p
        CROSS JOIN LATERAL bondhu.pending_sums(target, covered, snapshot, true, window_start) s
        WHERE p.user_id = target
    ), updated AS (
        UPDATE public.user_personality_profiles p SET
            openness = bondhu.adjusted_trait(p.openness, t.d[1], dampening),
            conscientiousness = bondhu.adjusted_trait(p.conscientiousness, t.d[2], dampening),
            extraversion = bondhu.adjusted_trait(p.extraversion, t.d[3], dampening),
            agreeableness = bondhu.adjusted_trait(p.agreeableness, t.d[4], dampening),
            neuroticism = bondhu.adjusted_trait(p.neuroticism, t.d[5], dampening),
            updated_at = CASE WHEN t.n[1] > 0 THEN now() ELSE p.updated_at END,
            applied_xmin = (snapshot).xmin_pos,
            applied_xmax = (snapshot).xmax_pos,
            applied_xip = (snapshot).xip_pos
        FROM totals t
        WHERE p.user_id = t.user_id
        RETURNING p.user_id, t.n[1] AS applied, t.n[2] AS chat, t.n[3] AS entertainment, t.n[4] AS rejected,
                  t.n[5] AS stale, t.n[6] AS ignored,
                  jsonb_build_object('not_an_object', t.n[7], 'not_a_number', t.n[8], 'over_100', t.n[9])
                      AS rejected_by_reason,
                  -- a trait without a value (an adopted profile) was 50, as adjusted_trait counts it
                  ARRAY[coalesce(t.openness, 50), coalesce(t.conscientiousness, 50), coalesce(t.extraversion, 50),
                        coalesce(t.agreeableness, 50), coalesce(t.neuroticism, 50)] AS before,
                  ARRAY[p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism] AS after
    ), history AS (
        INSERT INTO public.personality_profile_history
            (user_id, applied_at, task_id, trigger, insights_processed,
             openness_before, openness_after, conscientiousness_before, conscientiousness_after,
             extraversion_before, extraversion_after, agreeableness_before, agreeableness_after,
             neuroticism_before, neuroticism_after)
        SELECT u.user_id, now(), NULL, 'self_update', u.applied,
               u.before[1], u.after[1], u.before[2], u.after[2], u.before[3], u.after[3],
               u.before[4], u.after[4], u.before[5], u.after[5]
        FROM updated u
        WHERE u.applied > 0
    )
    SELECT u.user_id, u.applied, u.chat, u.entertainment, u.rejected, u.stale, u.ignored, u.rejected_by_reason,
           u.before, u.after
    FROM updated u;
END $$;

-- {"openness": {"before", "after", "change"}, ...} for two trait arrays.
CREATE FUNCTION bondhu.trait_changes(before double precision[], after double precision[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_object_agg(t.name, jsonb_build_object(
               'before', before[t.i], 'after', after[t.i],
               'change', after[t.i]::numeric - before[t.i]::numeric))
    FROM unnest(ARRAY['openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism'])
         WITH ORDINALITY AS t(name, i)
$$;

