-- bondhu: what the app's frontend reads: the live profile, and the profile and its
-- history without bondhu's internal columns.

-- The profile as it will be after the user's next update: the stored traits plus what
-- the pending insights add, by the rule and the exact arithmetic of an update, as of
-- now. Writes nothing and is not rate limited. Callers as bondhu_update_personality: a
-- signed-in user for their own id, operators for anyone. Its statements are planned once
-- per session, for any user (see apply_user_pending).
CREATE FUNCTION public.bondhu_profile(user_id uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET plan_cache_mode = force_generic_plan SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target uuid := bondhu_profile.user_id;
    operator boolean := bondhu.caller_is_operator();
    cfg bondhu.settings;
    profile public.user_personality_profiles;
    covered bondhu.cursor;
    snapshot bondhu.cursor;
    ahead boolean;
    pending record;
    stored double precision[];
    live double precision[];
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'bondhu_profile: user_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF NOT operator THEN
        PERFORM bondhu.require_own_profile(target, 'bondhu_profile');
    END IF;
    SELECT * INTO STRICT cfg FROM bondhu.settings;
    SELECT * INTO profile FROM public.user_personality_profiles p WHERE p.user_id = target;
    snapshot := bondhu.current_cursor();
    covered := bondhu.global_cursor();
    -- a constant of the statement, not a call for each insight
    ahead := bondhu.moved_ahead(target, covered);
    SELECT * INTO pending
    FROM bondhu.pending_sums(target, covered, snapshot, ahead,
                            bondhu.moment_before(now(), cfg.insight_window));
    stored := ARRAY[coalesce(profile.openness, 50), coalesce(profile.conscientiousness, 50),
                    coalesce(profile.extraversion, 50), coalesce(profile.agreeableness, 50),
                    coalesce(profile.neuroticism, 50)];
    live := ARRAY(SELECT bondhu.adjusted_trait(stored[i], coalesce(pending.d[i], 0), cfg.dampening)
                  FROM generate_series(1, 5) i ORDER BY i);
    RETURN jsonb_build_object(
        'user_id', target,
        'openness', live[1], 'conscientiousness', live[2], 'extraversion', live[3],
        'agreeableness', live[4], 'neuroticism', live[5],
        'pending_insights', coalesce(pending.n[1], 0),
        'rejected_insights', coalesce(pending.n[4], 0),
        'stored', jsonb_build_object('openness', stored[1], 'conscientiousness', stored[2],
                                     'extraversion', stored[3], 'agreeableness', stored[4],
                                     'neuroticism', stored[5], 'updated_at', profile.updated_at),
        'as_of', now(),
        -- (greatest ignores NULL: no self-service update made yet)
        'next_update_at', CASE WHEN operator THEN now() ELSE greatest(now(), bondhu.next_self_update_at(target, cfg.self_update_min_interval)) END);
END $$;
COMMENT ON FUNCTION public.bondhu_profile(uuid) IS
    'The live profile: stored traits plus what pending insights will add, as the next update would write them. Writes nothing.';

-- The profile and its history as the app reads them: without bondhu's cursor columns.
-- security_invoker: row level security applies as on the tables (a signed-in user sees
-- their own rows).
CREATE VIEW public.bondhu_profiles WITH (security_invoker = true) AS
    SELECT p.user_id, p.openness, p.conscientiousness, p.extraversion, p.agreeableness, p.neuroticism,
           p.created_at, p.updated_at
    FROM public.user_personality_profiles p;
COMMENT ON VIEW public.bondhu_profiles IS 'Each user''s stored Big Five profile (0 to 100).';

CREATE VIEW public.bondhu_profile_history WITH (security_invoker = true) AS
    SELECT h.user_id, h.applied_at, h.openness_after AS openness, h.conscientiousness_after AS conscientiousness,
           h.extraversion_after AS extraversion, h.agreeableness_after AS agreeableness,
           h.neuroticism_after AS neuroticism, h.insights_processed, h.trigger AS applied_by
    FROM public.personality_profile_history h;
COMMENT ON VIEW public.bondhu_profile_history IS
    'Each update of a profile: the traits after it, how many insights it applied, and by what (update_all, self_update).';
