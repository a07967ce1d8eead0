#!/usr/bin/env bash
# bondhu at scale, without the peers: what matters at 1,000,000 users (30 M insights).
#   bash scripts/large_run.sh [--users N] [--fast]
# Each user (a random version 4 id, with a profile before the run) gets 20 chat and 10
# entertainment insights over 29 days. The batched run the pg_cron job makes
# (CALL bondhu_run_update_all()) goes over all of them; the script reports that it
# completes and how long it took, the peak private memory of its backend, how long a
# self-service update issued 20 s into the run waits, and how long bondhu_metrics()
# takes before the run (30 M insights pending) and after it. Production durability
# (fsync, full_page_writes, synchronous_commit on) unless --fast. Builds the release
# extension and runs in the benchmarks' cluster (target/benchmark-cluster, port 28819 or
# BONDHU_BENCH_PORT; scripts/benchmark_common.sh). Against the peers: scripts/benchmark.sh.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/benchmark_common.sh"
USERS=1000000
while [ $# -gt 0 ]; do
    case $1 in
        --users) USERS=$2; shift 2 ;;
        --fast) FAST_DURABILITY=1; shift ;;
        *) echo "usage: $0 [--users N] [--fast]" >&2; exit 2 ;;
    esac
done
verdict() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "PASS" : "MISS"}'; }
# milliseconds the server took for one statement
timed() { cluster_psql -d "$DB" -c '\timing on' -c "$1" | grep -oP '^Time: \K[0-9.]+' | tail -1; }

benchmark_setup
log "generating $USERS users (random v4 ids, each with a profile) x 30 insights into bondhu's tables; $(durability)"
sql -c "CREATE TABLE large_users AS SELECT u, gen_random_uuid() AS user_id FROM generate_series(1, $USERS) u" \
    -c "INSERT INTO user_personality_profiles (user_id) SELECT user_id FROM large_users" \
    -c "INSERT INTO chat_personality_insights (user_id, \"timestamp\", adjustments)
        SELECT us.user_id, now() - random() * interval '29 days',
               jsonb_build_object('openness', round((random() * 4 - 2)::numeric, 2), 'extraversion', 1, 'neuroticism', -1)
        FROM large_users us, generate_series(1, 20)" \
    -c "INSERT INTO entertainment_interactions (user_id, created_at, personality_insights)
        SELECT us.user_id, now() - random() * interval '29 days',
               jsonb_build_object('agreeableness', round((random() * 4 - 2)::numeric, 2), 'openness', 0.5)
        FROM large_users us, generate_series(1, 10)" -c "VACUUM ANALYZE" >/dev/null
middle_user=$(sql -c "SELECT user_id FROM large_users WHERE u = $USERS / 2")
metrics_before=$(timed "SELECT bondhu_metrics()")
log "CALL bondhu_run_update_all() over $USERS users, with a self-service update in the middle"
start=$(date +%s.%N)
PGAPPNAME=bondhu_large sql -c "CALL bondhu_run_update_all()" >/dev/null &
runner=$!
( sleep 20; sql -c "SELECT round(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)
                    FROM (SELECT bondhu_update_personality('$middle_user')) u" \
    >"$ROOT/target/large-wait-ms" ) &
peak_kb=$(peak_private_kb bondhu_large "$runner")
wait "$runner"
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
wait
metrics_after=$(timed "SELECT bondhu_metrics()")
run_seconds=$(sql -c "SELECT duration_seconds FROM system_tasks WHERE task_name = 'personality_update'
                      ORDER BY executed_at DESC LIMIT 1")
wait_ms=$(cat "$ROOT/target/large-wait-ms")
cat <<REPORT

bondhu at scale — $(date -u +%Y-%m-%d), $USERS users, $((USERS * 30)) insights, $(nproc) cores, PostgreSQL $(sql -c 'SHOW server_version')
durability: $(durability)
$(sql -c "SELECT format('run: %s, users %s, insights %s, %s s', status, users_processed, records_processed, duration_seconds)
      FROM system_tasks WHERE task_name = 'personality_update' ORDER BY executed_at DESC LIMIT 1")
wall clock: $elapsed s
bondhu_metrics(): $metrics_before ms before the run (every insight pending), $metrics_after ms after it

| target                                                  | measured        | verdict |
|---------------------------------------------------------|-----------------|---------|
| CALL bondhu_run_update_all() < 60 s                     | $run_seconds s  | $(verdict "$run_seconds" 60) |
| peak private memory of the run's backend < 512 MB       | $((peak_kb / 1024)) MB | $(verdict "$((peak_kb / 1024))" 512) |
| a self-service update issued 20 s into the run waits < 100 ms | $wait_ms ms | $(verdict "$wait_ms" 100) |
| bondhu_metrics() < 50 ms after the run                  | $metrics_after ms | $(verdict "$metrics_after" 50) |
REPORT
