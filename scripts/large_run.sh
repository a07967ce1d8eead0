#!/usr/bin/env bash
# bondhu at scale, without the peers: what matters at 1,000,000 users (30 M insights).
#   bash scripts/large_run.sh [--users N]
# Each user gets 20 chat and 10 entertainment insights over 29 days. The batched run the
# pg_cron job makes (CALL bondhu_run_update_all()) goes over all of them; the script
# reports that it completes and how long it took, the peak private memory of its
# backend, and how long a self-service update issued 20 s into the run waits. Builds
# the release extension and runs in the benchmarks' cluster (target/benchmark-cluster,
# port 28819; scripts/benchmark_common.sh). Against the peers: scripts/benchmark.sh.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/benchmark_common.sh"
USERS=1000000
while [ $# -gt 0 ]; do
    case $1 in
        --users) USERS=$2; shift 2 ;;
        *) echo "usage: $0 [--users N]" >&2; exit 2 ;;
    esac
done

benchmark_setup
log "generating $USERS users x 30 insights into bondhu's tables"
sql -c "INSERT INTO chat_personality_insights (user_id, \"timestamp\", adjustments)
        SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid, now() - random() * interval '29 days',
               jsonb_build_object('openness', round((random() * 4 - 2)::numeric, 2), 'extraversion', 1, 'neuroticism', -1)
        FROM generate_series(1, $USERS) u, generate_series(1, 20)" \
    -c "INSERT INTO entertainment_interactions (user_id, created_at, personality_insights)
        SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid, now() - random() * interval '29 days',
               jsonb_build_object('agreeableness', round((random() * 4 - 2)::numeric, 2), 'openness', 0.5)
        FROM generate_series(1, $USERS) u, generate_series(1, 10)" -c "VACUUM ANALYZE" >/dev/null
log "CALL bondhu_run_update_all() over $USERS users, with a self-service update in the middle"
start=$(date +%s.%N)
PGAPPNAME=bondhu_large sql -c "CALL bondhu_run_update_all()" >/dev/null &
runner=$!
( sleep 20; sql -c "SELECT round(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)
                    FROM (SELECT bondhu_update_personality(('00000000-0000-4000-8000-' || lpad(to_hex($USERS / 2), 12, '0'))::uuid)) u" \
    >"$ROOT/target/large-wait-ms" ) &
peak_kb=$(peak_private_kb bondhu_large "$runner")
wait "$runner"
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
wait
cat <<REPORT

bondhu at scale — $(date -u +%Y-%m-%d), $USERS users, $((USERS * 30)) insights, $(nproc) cores
$(sql -c "SELECT format('run: %s, users %s, insights %s, %s s', status, users_processed, records_processed, duration_seconds)
      FROM system_tasks WHERE task_name = 'personality_update' ORDER BY executed_at DESC LIMIT 1")
wall clock: $elapsed s
peak private memory of the run's backend: $((peak_kb / 1024)) MB (target < 512 MB)
a self-service update issued 20 s into the run waited: $(cat "$ROOT/target/large-wait-ms") ms (target < 1000 ms)
REPORT
