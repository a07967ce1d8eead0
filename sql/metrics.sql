-- bondhu: metrics for monitoring, in the spirit of pgmq.metrics() and TimescaleDB's
-- job_stats; examples/postgres_exporter.yml turns them into Prometheus metrics.

-- What is pending: insights no cursor covers yet (the global cursor, or their
-- profile's), the users they belong to, and the oldest one's age. The global cursor is a
-- constant of the statement (a custom plan), so that the BRIN indexes on ingest_pos skip
-- what it covers: this reads only what came since the last completed run, and the
-- profiles that self-service updates moved ahead of it. The users are hashed, not
-- sorted (enable_sort off: the planner guesses a night's 100,000 pending insights as
-- a few thousand), and the plan is serial: a SELECT INTO never starts parallel
-- workers, and a plan made for them sorts (a night's backlog read again and again:
-- 140-155 ms sorted with a Gather that had no workers, 80-120 ms hashed; read once,
-- first after the night's insights, ~140 ms either way, within the machine's drift).
CREATE FUNCTION bondhu.backlog(OUT pending_insights bigint, OUT users_with_pending_insights bigint,
                               OUT oldest_pending_insight_at timestamptz)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_custom_plan SET enable_sort = off
SET max_parallel_workers_per_gather = 0 SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g bondhu.cursor := bondhu.global_cursor();
BEGIN
    SELECT coalesce(sum(u.insights), 0), count(*), min(u.oldest_at)
    INTO pending_insights, users_with_pending_insights, oldest_pending_insight_at
    FROM (SELECT i.user_id, count(*) AS insights, min(i.observed_at) AS oldest_at
          FROM bondhu.insights i
          -- a profile has applied an insight the global cursor does not cover only when a
          -- self-service update moved it ahead: those few are joined, not every profile
          LEFT JOIN (SELECT a.user_id, a.applied_xmin, a.applied_xmax, a.applied_xip
                     FROM public.user_personality_profiles a
                     WHERE NOT bondhu.cursor_within(a.applied_xmin, a.applied_xmax, a.applied_xip, g)) p
                 ON p.user_id = i.user_id
          WHERE i.ingest_pos >= (g).xmin_pos
            AND NOT bondhu.position_applied(i.ingest_pos, (g).xmin_pos, (g).xmax_pos, (g).xip_pos)
            AND NOT coalesce(bondhu.position_applied(i.ingest_pos, p.applied_xmin, p.applied_xmax, p.applied_xip),
                             false)
          GROUP BY i.user_id) u;
END $$;

-- Per task, over the run log (run_log_retention, 90 days by default): runs by status,
-- the last success and its age, and the last run's duration and counts.
CREATE FUNCTION bondhu.task_metrics(task text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'runs', count(*) FILTER (WHERE t.status <> 'running'),
        'failed_runs', count(*) FILTER (WHERE t.status = 'failed'),
        'runs_with_errors', count(*) FILTER (WHERE t.status = 'completed_with_errors'),
        'skipped_runs', count(*) FILTER (WHERE t.status = 'skipped'),
        'running', count(*) FILTER (WHERE t.status = 'running'),
        'last_success_at', max(t.executed_at) FILTER (WHERE t.status IN ('completed', 'completed_with_errors')),
        'seconds_since_last_success', round(extract(epoch FROM now() - max(t.executed_at)
            FILTER (WHERE t.status IN ('completed', 'completed_with_errors'))))::bigint,
        'last_run', (SELECT jsonb_build_object(
                         'task_id', l.id, 'status', l.status, 'started_at', l.executed_at,
                         'duration_seconds', l.duration_seconds, 'users_processed', l.users_processed,
                         'failed_updates', l.failed_updates, 'records_processed', l.records_processed,
                         'sqlstate', l.metadata -> 'sqlstate')
                     FROM public.system_tasks l
                     WHERE l.task_name = task AND l.status NOT IN ('skipped', 'running')
                     ORDER BY l.executed_at DESC LIMIT 1))
    FROM public.system_tasks t
    WHERE t.task_name = task
$$;

-- Everything a monitoring system scrapes, as one document. Cheap enough to call every
-- few seconds: the backlog reads only what came since the last completed run.
CREATE FUNCTION public.bondhu_metrics() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'as_of', now(),
        'tasks', jsonb_build_object('personality_update', bondhu.task_metrics('personality_update'),
                                    'insights_cleanup', bondhu.task_metrics('insights_cleanup')),
        'backlog', jsonb_build_object(
            'pending_insights', b.pending_insights,
            'users_with_pending_insights', b.users_with_pending_insights,
            'oldest_pending_insight_age_seconds',
                round(extract(epoch FROM now() - b.oldest_pending_insight_at))::bigint),
        'last_24h', (SELECT jsonb_build_object(
                         'insights_processed', coalesce(sum((t.metadata ->> 'insights_processed')::bigint), 0),
                         'rejected_insights', coalesce(sum((t.metadata ->> 'rejected_insights')::bigint), 0),
                         'rejected_by_reason', jsonb_build_object(
                             'not_an_object', coalesce(sum((t.metadata #>> '{rejected_by_reason,not_an_object}')::bigint), 0),
                             'not_a_number', coalesce(sum((t.metadata #>> '{rejected_by_reason,not_a_number}')::bigint), 0),
                             'over_100', coalesce(sum((t.metadata #>> '{rejected_by_reason,over_100}')::bigint), 0)),
                         'stale_insights', coalesce(sum((t.metadata ->> 'stale_insights')::bigint), 0),
                         'ignored_keys', coalesce(sum((t.metadata ->> 'ignored_keys')::bigint), 0),
                         'failed_updates', coalesce(sum(t.failed_updates), 0))
                     FROM bondhu.task_runs t
                     WHERE t.task_name = 'personality_update' AND t.executed_at > now() - interval '24 hours'))
    FROM bondhu.backlog() b
$$;
COMMENT ON FUNCTION public.bondhu_metrics() IS
    'Runs, failures and last success per task, the backlog of pending insights, and the last 24 hours'' rejected and stale insights.';
