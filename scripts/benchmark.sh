#!/usr/bin/env bash
# The benchmark: bondhu against its peers on the same data, in one run, as ratios.
#   bash scripts/benchmark.sh [--users N] [--reps R] [--old-per-user K]
# Defaults: 100,000 users (3 M insights), 3 repetitions (min and median), 10 old chat
# insights a user for the cleanup comparison. Builds the release extension and runs its
# own cluster (target/benchmark-cluster, port 28819; scripts/benchmark_common.sh). Times
# are measured by the server (psql \timing of one statement); setup is not timed.
# At scale (1,000,000 users, without the peers): scripts/large_run.sh.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/benchmark_common.sh"
USERS=100000 REPS=3 OLD_PER_USER=10
while [ $# -gt 0 ]; do
    case $1 in
        --users) USERS=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --old-per-user) OLD_PER_USER=$2; shift 2 ;;
        --large) echo "$0: the run at scale is scripts/large_run.sh" >&2; exit 2 ;;
        *) echo "usage: $0 [--users N] [--reps R] [--old-per-user K]" >&2; exit 2 ;;
    esac
done
LOOP_SAMPLE=$(( USERS / 10 > 0 ? USERS / 10 : 1 ))

benchmark_setup

# Milliseconds the server took for one statement.
timed() { cluster_psql -d "$DB" -c '\timing on' -c "$1" | grep -oP '^Time: \K[0-9.]+' | tail -1; }
# "min median" of the numbers on stdin.
stats() { sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.1f %.1f\n", v[1], m}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {ok = (op == "<=") ? v <= t : v >= t; print ok ? "PASS" : "MISS"}'; }

log "generating $USERS users x 30 insights"
sql -f "$ROOT/benchmark/peers.sql" >/dev/null
sql -v users="$USERS" -v old_per_user="$OLD_PER_USER" -f "$ROOT/benchmark/data.sql" >/dev/null
fresh() { sql -c "CALL peer.reset_$1($2)" -c "VACUUM ANALYZE" >/dev/null 2>&1; }

repeat() { # name, reset command, statement
    local name=$1 reset=$2 statement=$3
    for _ in $(seq 1 "$REPS"); do eval "$reset"; timed "$statement"; done | stats >"$RESULTS/$name"
    echo "  $name: min/median ms $(cat "$RESULTS/$name")" >&2
}
RESULTS=$(mktemp -d)
log "measuring ($REPS repetitions each)"
repeat set_based "fresh peer false" "SELECT peer.set_based_update()"
repeat per_user_loop "fresh peer false" "SELECT peer.per_user_loop($LOOP_SAMPLE)"
repeat update_all "fresh bondhu false" "SELECT bondhu_update_all()"
repeat run_update_all "fresh bondhu false" "CALL bondhu_run_update_all()"
repeat nightly "fresh bondhu false; sql -c 'SELECT bondhu_update_all()' -c 'CALL peer.add_new_day()' -c 'VACUUM ANALYZE' >/dev/null 2>&1" \
       "SELECT bondhu_update_all()"
repeat cleanup "fresh bondhu true" "SELECT bondhu_cleanup_insights('90 days')"
repeat plain_delete "fresh peer true" "DELETE FROM peer.chat WHERE \"timestamp\" < now() - interval '90 days'"
repeat insert_bondhu "sql -c 'TRUNCATE public.chat_personality_insights' >/dev/null" \
       "INSERT INTO public.chat_personality_insights (user_id, \"timestamp\", adjustments) SELECT user_id, at, doc FROM peer.staging_chat"
repeat insert_plain "sql -c 'TRUNCATE peer.chat' >/dev/null" \
       "INSERT INTO peer.chat (user_id, \"timestamp\", adjustments) SELECT user_id, at, doc FROM peer.staging_chat"

log "latency of bondhu_update_personality, 1,000 random users with 30 pending insights each"
fresh bondhu false
read -r update_p50 update_p99 select_p50 select_p99 < <(sql -F ' ' -c "
    SELECT * FROM peer.latencies(ARRAY(SELECT peer.user_id(1 + (random() * ($USERS - 1))::int) FROM generate_series(1, 1000)))")

log "peak private memory of the backend running update_all"
fresh bondhu false
PGAPPNAME=bondhu_peak sql -c "SELECT bondhu_update_all() IS NOT NULL" >/dev/null &
runner=$!
peak_kb=$(peak_private_kb bondhu_peak "$runner")
wait "$runner"

min() { cut -d' ' -f1 "$RESULTS/$1"; }
med() { cut -d' ' -f2 "$RESULTS/$1"; }
loop_full=$(awk -v m="$(med per_user_loop)" -v s="$LOOP_SAMPLE" -v u="$USERS" 'BEGIN {printf "%.1f", m * u / s}')
r_set=$(ratio "$(med update_all)" "$(med set_based)")
r_loop=$(ratio "$loop_full" "$(med update_all)")
r_night=$(ratio "$(med nightly)" "$(med update_all)")
r_clean=$(ratio "$(med cleanup)" "$(med plain_delete)")
r_insert=$(ratio "$(med insert_plain)" "$(med insert_bondhu)")
r_latency=$(ratio "$update_p99" "$select_p99")

cat <<REPORT

bondhu benchmark — $(date -u +%Y-%m-%d), $USERS users, $((USERS * 30)) insights, $REPS repetitions
machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GB RAM, PostgreSQL $(sql -c 'SHOW server_version')

| measurement                                   | min ms     | median ms  |
|-----------------------------------------------|------------|------------|
| (1) per-user PL/pgSQL loop, $LOOP_SAMPLE users (sampled)  | $(min per_user_loop) | $(med per_user_loop) |
| (1) per-user loop, extrapolated to $USERS users |            | $loop_full |
| (2) set-based SQL statement                   | $(min set_based) | $(med set_based) |
| (3) bondhu_update_all(), fresh data           | $(min update_all) | $(med update_all) |
| (3) CALL bondhu_run_update_all(), fresh data  | $(min run_update_all) | $(med run_update_all) |
| (4) bondhu_update_all(), one new day          | $(min nightly) | $(med nightly) |
| (6) bondhu_cleanup_insights('90 days')        | $(min cleanup) | $(med cleanup) |
| (6) plain DELETE of the same rows             | $(min plain_delete) | $(med plain_delete) |
| (7) INSERT $((USERS * 20)) chat insights, bondhu table | $(min insert_bondhu) | $(med insert_bondhu) |
| (7) INSERT $((USERS * 20)) chat insights, plain table  | $(min insert_plain) | $(med insert_plain) |
| (5) bondhu_update_personality p50 / p99       | $update_p50 | $update_p99 |
| (5) indexed SELECT of the user's insights p50 / p99 | $select_p50 | $select_p99 |
| backend peak private memory during update_all (RssAnon) | $((peak_kb / 1024)) MB |            |

| target                                                   | measured            | verdict |
|----------------------------------------------------------|---------------------|---------|
| first update_all <= 1.0 x set-based SQL                  | $r_set x            | $(verdict "$r_set" 1.0 "<=") |
| first update_all >= 50 x faster than the per-user loop   | $r_loop x faster    | $(verdict "$r_loop" 50 ">=") |
| nightly run <= 0.1 x first full run                      | $r_night x          | $(verdict "$r_night" 0.1 "<=") |
| update_personality p99 < 5 ms                            | $update_p99 ms      | $(verdict "$update_p99" 5 "<=") |
| update_personality p99 <= 3 x indexed SELECT p99         | $r_latency x        | $(verdict "$r_latency" 3 "<=") |
| insert throughput >= 0.8 x plain table                   | $r_insert x         | $(verdict "$r_insert" 0.8 ">=") |
| cleanup <= 1.5 x plain DELETE                            | $r_clean x          | $(verdict "$r_clean" 1.5 "<=") |
| backend peak memory < 512 MB                             | $((peak_kb / 1024)) MB | $(verdict "$((peak_kb / 1024))" 512 "<=") |
REPORT
rm -rf "$RESULTS"
