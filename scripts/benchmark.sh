#!/usr/bin/env bash
# The benchmark: bondhu against its peers on the same data, in one run, as ratios.
#   bash scripts/benchmark.sh [--users N] [--reps R] [--old-per-user K] [--fast]
# Defaults: 100,000 users (3 M insights), 3 repetitions (min and median), 10 old chat
# insights a user for the cleanup comparison. Production durability (fsync,
# full_page_writes and synchronous_commit on); --fast turns all three off, and the
# report says so. Builds the release extension and runs its own cluster
# (target/benchmark-cluster, port 28819 or BONDHU_BENCH_PORT; scripts/benchmark_common.sh).
# Times are measured by the server (psql \timing of one statement); setup is not timed.
# Where the time goes: EXPLAIN (ANALYZE, BUFFERS) of the runs' statements (auto_explain,
# nested statements included) into target/benchmark-explain/. At scale (1,000,000 users,
# without the peers): scripts/large_run.sh.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/benchmark_common.sh"
USERS=100000 REPS=3 OLD_PER_USER=10
while [ $# -gt 0 ]; do
    case $1 in
        --users) USERS=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --old-per-user) OLD_PER_USER=$2; shift 2 ;;
        --fast) FAST_DURABILITY=1; shift ;;
        --large) echo "$0: the run at scale is scripts/large_run.sh" >&2; exit 2 ;;
        *) echo "usage: $0 [--users N] [--reps R] [--old-per-user K] [--fast]" >&2; exit 2 ;;
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

log "generating $USERS users (random v4 ids, each with a profile) x 30 insights; $(durability)"
sql -f "$ROOT/benchmark/peers.sql" >/dev/null
sql -v users="$USERS" -v old_per_user="$OLD_PER_USER" -f "$ROOT/benchmark/data.sql" >/dev/null
ACTIVE=$(sql -c "SELECT count(DISTINCT user_id) FROM peer.staging_new_day")
NEW_INSIGHTS=$(sql -c "SELECT count(*) FROM peer.staging_new_day")
# Each preparation ends with a CHECKPOINT: the next measurement starts with no dirty
# pages of it to write (a checkpoint that the preparation's WAL set off would otherwise
# run during whichever measurement comes next).
fresh() { sql -c "CALL peer.reset_$1($2)" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null 2>&1; }
fresh_profiles() { sql -c "CALL peer.reset_peer_profiles()" -c "VACUUM ANALYZE peer.profiles" -c "CHECKPOINT" >/dev/null 2>&1; }
# bondhu after a full run, with the realistic night's insights pending
night() { fresh bondhu false; sql -c 'SELECT bondhu_update_all()' -c 'CALL peer.add_new_day()' -c 'VACUUM ANALYZE' -c 'CHECKPOINT' >/dev/null 2>&1; }

repeat() { # name, reset command, statement
    local name=$1 reset=$2 statement=$3
    for _ in $(seq 1 "$REPS"); do eval "$reset"; timed "$statement"; done | stats >"$RESULTS/$name"
    echo "  $name: min/median ms $(cat "$RESULTS/$name")" >&2
}
RESULTS=$(mktemp -d)
log "measuring ($REPS repetitions each)"
fresh peer false
repeat set_based "fresh_profiles" "SELECT peer.set_based_update()"
repeat set_based_f8 "fresh_profiles" "SELECT peer.set_based_update_float8()"
repeat per_user_loop "fresh_profiles" "SELECT peer.per_user_loop($LOOP_SAMPLE)"
fresh peer "false, true"
repeat nightly_set_based_f8 "fresh_profiles" "SELECT peer.set_based_update_float8()"
repeat update_all "fresh bondhu false" "SELECT bondhu_update_all()"
repeat run_update_all "fresh bondhu false" "CALL bondhu_run_update_all()"
# bondhu_metrics() as a monitoring system scrapes it: between nightly runs, with the
# night's insights pending (measured while the nightly run's data is set up)
repeat nightly "night; timed 'SELECT bondhu_metrics()' >>$RESULTS/metrics_raw" "SELECT bondhu_update_all()"
repeat nightly_call "night; timed 'SELECT bondhu_metrics()' >>$RESULTS/metrics_raw" "CALL bondhu_run_update_all()"
# the floor under the night: its writes alone (the active users' profiles and history rows)
repeat night_writes "night" "SELECT peer.night_writes()"
stats <"$RESULTS/metrics_raw" >"$RESULTS/metrics"
repeat metrics_all_pending "fresh bondhu false" "SELECT bondhu_metrics()"
repeat cleanup "fresh bondhu true" "SELECT bondhu_cleanup_insights('90 days')"
repeat plain_delete "fresh peer true" "DELETE FROM peer.chat WHERE \"timestamp\" < now() - interval '90 days'"
repeat insert_bondhu "sql -c 'TRUNCATE public.chat_personality_insights' >/dev/null" \
       "INSERT INTO public.chat_personality_insights (user_id, \"timestamp\", adjustments) SELECT user_id, at, doc FROM peer.staging_chat"
repeat insert_plain "sql -c 'TRUNCATE peer.chat' >/dev/null" \
       "INSERT INTO peer.chat (user_id, \"timestamp\", adjustments) SELECT user_id, at, doc FROM peer.staging_chat"

log "latency of bondhu_profile and bondhu_update_personality, 1,000 random users with 30 pending insights each"
fresh bondhu false
read -r update_p50 update_p99 select_p50 select_p99 profile_p50 profile_p99 < <(sql -F ' ' -c "
    SELECT * FROM peer.latencies(ARRAY(SELECT peer.user_id(1 + (random() * ($USERS - 1))::int) FROM generate_series(1, 1000)), false)")
log "the same, each call made as the signed-in user (PostgREST's role authenticated and the user's JWT), 1,000 other users"
fresh bondhu false
read -r user_update_p50 user_update_p99 _ _ user_profile_p50 user_profile_p99 < <(sql -F ' ' -c "
    SELECT * FROM peer.latencies(ARRAY(SELECT peer.user_id(g) FROM generate_series(1, $USERS) g ORDER BY random() LIMIT 1000), true)")

log "peak private memory of the backend running update_all"
fresh bondhu false
PGAPPNAME=bondhu_peak sql -c "SELECT bondhu_update_all() IS NOT NULL" >/dev/null &
runner=$!
peak_kb=$(peak_private_kb bondhu_peak "$runner")
wait "$runner"

log "where the time goes: EXPLAIN (ANALYZE, BUFFERS) of the runs' statements into target/benchmark-explain/"
EXPLAIN_DIR=$ROOT/target/benchmark-explain
rm -rf "$EXPLAIN_DIR" && mkdir -p "$EXPLAIN_DIR"
# every statement of $2 (nested ones too) that took 5 ms or more, with its plan
explained() {
    cluster_psql -d "$DB" -c "LOAD 'auto_explain'" -c "SET auto_explain.log_min_duration = 5" \
        -c "SET auto_explain.log_analyze = on" -c "SET auto_explain.log_buffers = on" \
        -c "SET auto_explain.log_nested_statements = on" -c "SET auto_explain.log_level = notice" \
        -c "SET client_min_messages = notice" -c '\timing on' -c "$2" >"$EXPLAIN_DIR/$1.txt" 2>&1
}
fresh bondhu false
explained full-update_all "SELECT bondhu_update_all()"
fresh bondhu false
explained full-run_update_all "CALL bondhu_run_update_all()"
night
explained nightly-update_all "SELECT bondhu_update_all()"
night
explained nightly-run_update_all "CALL bondhu_run_update_all()"
fresh_profiles
explained full-set_based_float8 "SELECT peer.set_based_update_float8()"
fresh bondhu false
explained metrics-all_pending "SELECT bondhu_metrics()"
night
explained metrics-nightly "SELECT bondhu_metrics()"

min() { cut -d' ' -f1 "$RESULTS/$1"; }
med() { cut -d' ' -f2 "$RESULTS/$1"; }
loop_full=$(awk -v m="$(med per_user_loop)" -v s="$LOOP_SAMPLE" -v u="$USERS" 'BEGIN {printf "%.1f", m * u / s}')
r_full=$(ratio "$(med update_all)" "$(med set_based_f8)")
r_full_call=$(ratio "$(med run_update_all)" "$(med set_based_f8)")
r_night=$(ratio "$(med nightly)" "$(med nightly_set_based_f8)")
r_night_call=$(ratio "$(med nightly_call)" "$(med nightly_set_based_f8)")
us_night=$(awk -v m="$(med nightly)" -v n="$ACTIVE" 'BEGIN {printf "%.1f", m * 1000 / n}')
us_night_call=$(awk -v m="$(med nightly_call)" -v n="$ACTIVE" 'BEGIN {printf "%.1f", m * 1000 / n}')
r_clean=$(ratio "$(med cleanup)" "$(med plain_delete)")
r_insert=$(ratio "$(med insert_plain)" "$(med insert_bondhu)")
r_latency=$(ratio "$update_p99" "$select_p99")

cat <<REPORT

bondhu benchmark — $(date -u +%Y-%m-%d), $USERS users, $((USERS * 30)) insights, $REPS repetitions
machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GB RAM, PostgreSQL $(sql -c 'SHOW server_version')
durability: $(durability)
data: random v4 user ids, every user with a profile before the run; realistic night: $ACTIVE users active (20 %), $NEW_INSIGHTS new insights

| measurement                                   | min ms     | median ms  |
|-----------------------------------------------|------------|------------|
| (1) per-user PL/pgSQL loop, $LOOP_SAMPLE users (sampled)  | $(min per_user_loop) | $(med per_user_loop) |
| (1) per-user loop, extrapolated to $USERS users |            | $loop_full |
| (2) set-based SQL statement, numeric          | $(min set_based) | $(med set_based) |
| (2) set-based SQL statement, float8           | $(min set_based_f8) | $(med set_based_f8) |
| (3) bondhu_update_all(), fresh data           | $(min update_all) | $(med update_all) |
| (3) CALL bondhu_run_update_all(), fresh data  | $(min run_update_all) | $(med run_update_all) |
| (4) set-based float8 statement, the night after (whole window again) | $(min nightly_set_based_f8) | $(med nightly_set_based_f8) |
| (4) bondhu_update_all(), the night after      | $(min nightly) | $(med nightly) |
| (4) CALL bondhu_run_update_all(), the night after | $(min nightly_call) | $(med nightly_call) |
| (4) the night's writes alone: profiles and history rows, no insight read | $(min night_writes) | $(med night_writes) |
| (8) bondhu_metrics(), the night's insights pending | $(min metrics) | $(med metrics) |
| (8) bondhu_metrics(), all 30 days pending (never run) | $(min metrics_all_pending) | $(med metrics_all_pending) |
| (6) bondhu_cleanup_insights('90 days')        | $(min cleanup) | $(med cleanup) |
| (6) plain DELETE of the same rows             | $(min plain_delete) | $(med plain_delete) |
| (7) INSERT $((USERS * 20)) chat insights, bondhu table | $(min insert_bondhu) | $(med insert_bondhu) |
| (7) INSERT $((USERS * 20)) chat insights, plain table  | $(min insert_plain) | $(med insert_plain) |
| (5) bondhu_update_personality p50 / p99, 30 pending | $update_p50 | $update_p99 |
| (5) bondhu_profile p50 / p99, 30 pending      | $profile_p50 | $profile_p99 |
| (5) bondhu_update_personality p50 / p99, as the signed-in user | $user_update_p50 | $user_update_p99 |
| (5) bondhu_profile p50 / p99, as the signed-in user | $user_profile_p50 | $user_profile_p99 |
| (5) indexed SELECT of the user's insights p50 / p99 | $select_p50 | $select_p99 |
| backend peak private memory during update_all (RssAnon) | $((peak_kb / 1024)) MB |            |

| target                                                   | measured            | verdict |
|----------------------------------------------------------|---------------------|---------|
| full run: update_all <= 1.0 x float8 set-based (aim 0.5) | $r_full x           | $(verdict "$r_full" 1.0 "<=") |
| full run: CALL run_update_all <= 1.0 x float8 set-based  | $r_full_call x      | $(verdict "$r_full_call" 1.0 "<=") |
| nightly: update_all <= 0.1 x float8 set-based nightly    | $r_night x          | $(verdict "$r_night" 0.1 "<=") |
| nightly: CALL run_update_all <= 0.1 x float8 set-based   | $r_night_call x     | $(verdict "$r_night_call" 0.1 "<=") |
| nightly: update_all <= 15 us per touched user            | $us_night us        | $(verdict "$us_night" 15 "<=") |
| nightly: CALL run_update_all <= 15 us per touched user   | $us_night_call us   | $(verdict "$us_night_call" 15 "<=") |
| update_personality p99 < 2 ms (30 pending)               | $update_p99 ms      | $(verdict "$update_p99" 2 "<=") |
| bondhu_profile p99 < 2 ms (30 pending)                   | $profile_p99 ms     | $(verdict "$profile_p99" 2 "<=") |
| the same two as the signed-in user: update / profile p99 < 2 ms | $user_update_p99 / $user_profile_p99 ms | $(verdict "$user_update_p99" 2 "<=") / $(verdict "$user_profile_p99" 2 "<=") |
| bondhu_metrics() < 50 ms (the night's backlog)           | $(med metrics) ms   | $(verdict "$(med metrics)" 50 "<=") |
| update_personality p99 <= 3 x indexed SELECT p99         | $r_latency x        | $(verdict "$r_latency" 3 "<=") |
| insert throughput >= 0.8 x plain table                   | $r_insert x         | $(verdict "$r_insert" 0.8 ">=") |
| cleanup <= 1.5 x plain DELETE                            | $r_clean x          | $(verdict "$r_clean" 1.5 "<=") |
| backend peak memory < 512 MB                             | $((peak_kb / 1024)) MB | $(verdict "$((peak_kb / 1024))" 512 "<=") |

(per-user loop, for reference: $(ratio "$loop_full" "$(med update_all)") x update_all's time)
(the night's writes alone, for reference: $(ratio "$(med night_writes)" "$(med nightly_set_based_f8)") x the float8 nightly statement, $(awk -v m="$(med night_writes)" -v n="$ACTIVE" 'BEGIN {printf "%.1f", m * 1000 / n}') us a touched user)
plans: $EXPLAIN_DIR
REPORT
rm -rf "$RESULTS"
