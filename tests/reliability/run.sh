# Reliability: concurrency, kills, dump and restore into a new cluster (pg_restore, and
# Supabase's data-only recipe under replica role), logical replication, a dump restored
# into a copy of its cluster, hostile input.
# Each scenario ends with tests/reliability/invariant.sql: every profile = 50 + 0.1 x
# the sum of its insights, and the history accounts for every insight exactly once.
#
#   CLUSTER_DIR=... CLUSTER_PORT=... RESULTS=... bash tests/reliability/run.sh
#
# Inputs, checked before anything runs (scripts/test.sh sets them, then sources this
# file with set +e; `scripts/test.sh --suite reliability` runs it alone):
#   CLUSTER_DIR   the running test cluster: its data directory, holding its socket and
#                 its server.log (as scripts/common.sh's start_cluster makes it); the
#                 kill scenario stops and restarts it with pg_ctl
#   CLUSTER_PORT  its port
#   RESULTS       a directory for logs and generated files, writable by postgres
#   PG_VERSION    the PostgreSQL it runs (default 15), whose programs scripts/common.sh
#                 finds
#   SOAK_SECONDS  how long the concurrency scenario runs (default 20)
# The cluster must have bondhu installed in its PostgreSQL and a database bondhu_cron
# that pg_cron is configured for (cron.database_name); the scenarios create and drop
# their own databases there and start clusters of their own: one in
# target/restore-cluster-pgVERSION on port CLUSTER_PORT + 2 for the restores and logical
# replication, its standby on CLUSTER_PORT + 5, and an original and its copy on
# CLUSTER_PORT + 3 and + 4.
# Each check is reported with `record NAME STATUS`: scripts/test.sh's own when it
# sources this file; run alone, one defined here, and the exit status is the number
# of failed checks.
reliability_sourced=false
(return 0 2>/dev/null) && reliability_sourced=true
if ! declare -F cluster_psql >/dev/null; then
    source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
    set +e
fi
if ! declare -F record >/dev/null; then
    reliability_failed=0
    record() { # name, exit status
        if [ "$2" -eq 0 ]; then echo "ok: $1"; else reliability_failed=$((reliability_failed + 1)); echo "FAILED: $1"; fi
    }
fi
reliability_inputs() {
    local name
    for name in CLUSTER_DIR CLUSTER_PORT RESULTS; do
        [ -n "${!name:-}" ] || { echo "tests/reliability/run.sh: set $name (see its top)" >&2; return 2; }
    done
    [ -f "$CLUSTER_DIR/PG_VERSION" ] && [ -f "$CLUSTER_DIR/server.log" ] ||
        { echo "tests/reliability/run.sh: no cluster with a server.log in CLUSTER_DIR=$CLUSTER_DIR" >&2; return 2; }
    [ "$(cat "$CLUSTER_DIR/PG_VERSION")" = "$PG_VERSION" ] ||
        { echo "tests/reliability/run.sh: the cluster is PostgreSQL $(cat "$CLUSTER_DIR/PG_VERSION"), PG_VERSION is $PG_VERSION" >&2; return 2; }
    [ -d "$RESULTS" ] || { echo "tests/reliability/run.sh: no directory RESULTS=$RESULTS" >&2; return 2; }
    cluster_psql -d bondhu_cron -c "SELECT" >/dev/null ||
        { echo "tests/reliability/run.sh: cannot reach database bondhu_cron on port $CLUSTER_PORT" >&2; return 2; }
}
if ! reliability_inputs; then
    record "reliability: its inputs (CLUSTER_DIR, CLUSTER_PORT, RESULTS)" 2
    if $reliability_sourced; then return 2; else exit 2; fi
fi
HERE="$ROOT/tests/reliability"
SOAK_SECONDS=${SOAK_SECONDS:-20}
SOAK_CLIENTS=6

invariant() { cluster_psql -d "$1" -f "$HERE/invariant.sql"; }
# An invariant line with no wrong profile and every insight in the history once.
invariant_holds() { # line
    local insights history
    insights=$(sed -E 's/.*insights=([0-9]+).*/\1/' <<<"$1")
    history=$(sed -E 's/.*history_insights=([0-9]+).*/\1/' <<<"$1")
    [[ $1 == *"wrong_profiles=0 "* && $insights == "$history" && $insights -gt 0 ]]
}
fresh_bondhu_db() {
    recreate_database "$1" >/dev/null
    cluster_psql -d "$1" -c "CREATE EXTENSION bondhu"
}
# Users 1..$2 with $3 chat insights each, openness in [-1, 1]: far from the clamps.
add_insights() { # db users per_user
    cluster_psql -d "$1" -c "
        INSERT INTO chat_personality_insights (user_id, adjustments)
        SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid,
               jsonb_build_object('openness', round((random() * 2 - 1)::numeric, 3))
        FROM generate_series(1, $2) u, generate_series(1, $3)"
}

log "concurrency: $SOAK_CLIENTS clients for ${SOAK_SECONDS}s inserting, self-updating and running update_all"
fresh_bondhu_db bondhu_soak
add_insights bondhu_soak 200 5
cat >"$RESULTS/soak-insert.sql" <<'SQL'
\set u random(1, 200)
\set v random(-1000, 1000)
INSERT INTO chat_personality_insights (user_id, adjustments)
VALUES (('00000000-0000-0000-0000-' || lpad(:u::text, 12, '0'))::uuid, jsonb_build_object('openness', :v / 1000.0));
SQL
cat >"$RESULTS/soak-self.sql" <<'SQL'
\set u random(1, 200)
SELECT bondhu_update_personality(('00000000-0000-0000-0000-' || lpad(:u::text, 12, '0'))::uuid);
SQL
echo 'SELECT bondhu_update_all();' >"$RESULTS/soak-all.sql"
"$PG_BIN/pgbench" -n -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres -c "$SOAK_CLIENTS" -j 2 -T "$SOAK_SECONDS" \
    -f "$RESULTS/soak-insert.sql@10" -f "$RESULTS/soak-self.sql@5" -f "$RESULTS/soak-all.sql@1" \
    bondhu_soak >"$RESULTS/soak-pgbench.log" 2>&1
soak_status=$?
grep -E "number of transactions actually processed|number of failed|aborted|tps =" "$RESULTS/soak-pgbench.log" || true
record "concurrency: no client error (pgbench exit $soak_status)" "$soak_status"
cluster_psql -d bondhu_soak -c "SELECT bondhu_update_all()" >/dev/null
line=$(invariant bondhu_soak); echo "$line"
invariant_holds "$line"
record "concurrency: every insight applied exactly once" $?
! grep -qE "deadlock detected|could not serialize" "$CLUSTER_DIR/server.log"
record "concurrency: no deadlock or serialization failure" $?

# A running update is killed: what it had not committed rolls back whole, and the next
# run applies everything exactly once.
# The kill waits for the statement to be active and then for `ready` (a query answering t),
# polled rather than slept so that a slow machine does not kill too early.
kill_during_update() { # db how statement [ready]
    local db=$1 how=$2 statement=$3 ready=${4:-"SELECT true"} pid
    cluster_psql -d "$db" -c "$statement" >"$RESULTS/kill-$how.log" 2>&1 &
    local client=$!
    for _ in $(seq 1 600); do
        pid=$(cluster_psql -d "$db" -Atc "SELECT pid FROM pg_stat_activity WHERE query = '$statement' AND state = 'active'")
        [ -n "$pid" ] && break
        sleep 0.05
    done
    sleep 0.5
    for _ in $(seq 1 1200); do
        [ "$(cluster_psql -d "$db" -Atc "$ready")" = t ] && break
        sleep 0.05
    done
    if [ "$how" != immediate_shutdown ]; then  # terminate (update_all or the procedure)
        cluster_psql -d "$db" -c "SELECT pg_terminate_backend($pid)" >/dev/null
    else
        sudo -u postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR" -m immediate -w stop >/dev/null
        sudo -u postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR" -l "$CLUSTER_DIR/server.log" -w start >/dev/null
    fi
    wait "$client" || true
}
for how in terminate immediate_shutdown; do
    log "kill: $how in the middle of update_all (60,000 users, 600,000 insights)"
    fresh_bondhu_db bondhu_kill
    add_insights bondhu_kill 60000 10
    kill_during_update bondhu_kill "$how" "SELECT bondhu_update_all()"
    grep -qE "terminating connection|server closed the connection|connection to server was lost" "$RESULTS/kill-$how.log"
    record "kill ($how): the run was interrupted mid-way" $?
    touched=$(cluster_psql -d bondhu_kill -Atc "SELECT (SELECT count(*) FROM user_personality_profiles WHERE openness <> 50)
                                                + (SELECT count(*) FROM personality_profile_history)
                                                + (SELECT count(*) FROM system_tasks WHERE status = 'running')")
    [ "$touched" = 0 ]
    record "kill ($how): no partial batch, no 'running' row left" $?
    cluster_psql -d bondhu_kill -c "SELECT bondhu_update_all()" >/dev/null
    line=$(invariant bondhu_kill); echo "$line"
    invariant_holds "$line"
    record "kill ($how): the next run applies every insight exactly once" $?
done

log "kill: terminate the batched procedure after some batches have committed"
fresh_bondhu_db bondhu_kill
add_insights bondhu_kill 60000 10
kill_during_update bondhu_kill procedure "CALL bondhu_run_update_all(2000)" \
    "SELECT count(*) > 0 FROM user_personality_profiles WHERE openness <> 50"
done_before=$(cluster_psql -d bondhu_kill -Atc "SELECT count(*) FROM user_personality_profiles WHERE openness <> 50")
echo "users updated by committed batches before the kill: $done_before"
[ "$done_before" -gt 0 ] && [ "$done_before" -lt 60000 ]
record "kill (procedure): killed after some batches committed" $?
cluster_psql -d bondhu_kill -c "CALL bondhu_run_update_all(2000)"
[ "$(cluster_psql -d bondhu_kill -Atc "SELECT count(*) FROM system_tasks WHERE status = 'failed' AND error_message LIKE 'interrupted%'")" = 1 ]
record "kill (procedure): the killed run is marked interrupted, not left running" $?
line=$(invariant bondhu_kill); echo "$line"
invariant_holds "$line"
record "kill (procedure): committed batches are not applied again, the rest once" $?

log "a self-service update while a batched run works through 60,000 users"
fresh_bondhu_db bondhu_wait
add_insights bondhu_wait 60000 10
cluster_psql -d bondhu_wait -c "CALL bondhu_run_update_all(1000)" &
runner=$!
for _ in $(seq 1 1200); do # until the run has committed its 'running' row
    [ "$(cluster_psql -d bondhu_wait -Atc "SELECT count(*) FROM system_tasks WHERE status = 'running'")" = 1 ] && break
    sleep 0.05
done
# the last user in key order: the run reaches it last
wait_ms=$(cluster_psql -d bondhu_wait -Atc "
    SELECT round(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)
    FROM (SELECT bondhu_update_personality('00000000-0000-0000-0000-000000060000')) AS u")
running=$(cluster_psql -d bondhu_wait -Atc "SELECT count(*) FROM system_tasks WHERE status = 'running'")
wait "$runner"
echo "self-service update took ${wait_ms} ms while the run was going on (running rows seen: $running)"
[ "$running" = 1 ] && [ "$wait_ms" -lt 1000 ]
record "batched run: a self-service update during the run waits under 1 s" $?
line=$(invariant bondhu_wait); echo "$line"
invariant_holds "$line"
record "batched run: every insight applied exactly once" $?

log "dump of a database in use, restored into a new cluster"
RESTORE_DIR=$ROOT/target/restore-cluster-pg$PG_VERSION
RESTORE_PORT=$((CLUSTER_PORT + 2))
stop_cluster "$RESTORE_DIR"; rm -rf "$RESTORE_DIR"
# In the cron database, so that the dump carries bondhu's schedules too. Earlier suites
# used it: start from nothing (DROP EXTENSION keeps the application's tables).
cluster_psql -d bondhu_cron -c "DROP EXTENSION IF EXISTS bondhu" -c "DROP EXTENSION IF EXISTS pg_cron" \
    -c "DROP TABLE IF EXISTS chat_personality_insights, entertainment_interactions, user_personality_profiles, personality_profile_history" \
    -c "CREATE EXTENSION pg_cron" -c "CREATE EXTENSION bondhu" -c "SELECT bondhu_schedule('30 1 * * *', '15 4 * * 6')" >/dev/null
add_insights bondhu_cron 300 4
cluster_psql -d bondhu_cron -c "SELECT bondhu_update_all()" >/dev/null           # applied by update_all
add_insights bondhu_cron 300 1
cluster_psql -d bondhu_cron -c "SELECT bondhu_update_personality('00000000-0000-0000-0000-000000000001')" >/dev/null  # applied by a self-update
add_insights bondhu_cron 300 2                                                    # pending
# keep writing while pg_dump runs
cluster_psql -d bondhu_cron -c "DO \$\$ BEGIN FOR i IN 1..40 LOOP
    INSERT INTO chat_personality_insights (user_id, adjustments)
    VALUES ('00000000-0000-0000-0000-000000000002', '{\"openness\": 0.5}'); COMMIT; PERFORM pg_sleep(0.05); END LOOP; END \$\$" &
writer=$!
sudo -u postgres "$PG_BIN/pg_dump" -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres -Fc -f "$RESULTS/bondhu.pgdump" bondhu_cron
wait "$writer"
before=$(cluster_psql -d bondhu_cron -Atc "SELECT format('%s/%s/%s', (SELECT count(*) FROM user_personality_profiles),
                                           (SELECT count(*) FROM personality_profile_history), (SELECT count(*) FROM system_tasks))")
start_cluster "$RESTORE_DIR" "$RESTORE_PORT" bondhu_cron
restore_psql() { psql -X -q -v ON_ERROR_STOP=1 -h "$RESTORE_DIR" -p "$RESTORE_PORT" -U postgres -d bondhu_cron "$@"; }
psql -X -q -h "$RESTORE_DIR" -p "$RESTORE_PORT" -U postgres -d postgres -c "CREATE DATABASE bondhu_cron"
sudo -u postgres "$PG_BIN/pg_restore" -h "$RESTORE_DIR" -p "$RESTORE_PORT" -U postgres --exit-on-error -d bondhu_cron "$RESULTS/bondhu.pgdump"
record "dump/restore: pg_restore without error" $?
# The checks after a restore into the restore cluster's bondhu_cron (`before` holds the
# source's counts): profiles, history and run log all there; pending insights apply
# once, applied ones never again, and 300 written after the restore apply too; the
# restore started a new incarnation.
check_restored() { # label
    local after line
    after=$(restore_psql -Atc "SELECT format('%s/%s/%s', (SELECT count(*) FROM user_personality_profiles),
                               (SELECT count(*) FROM personality_profile_history), (SELECT count(*) FROM system_tasks))")
    echo "profiles/history/runs before: $before, restored: $after"
    [ "$before" = "$after" ]
    record "$1: profiles, history and run log all restored" $?
    restore_psql -c "SELECT bondhu_update_all()" >/dev/null
    restore_psql -c "INSERT INTO chat_personality_insights (user_id, adjustments)
                     SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, '{\"openness\": 0.25}'
                     FROM generate_series(1, 300) u"
    restore_psql -c "SELECT bondhu_update_all()" >/dev/null
    line=$(psql -X -q -h "$RESTORE_DIR" -p "$RESTORE_PORT" -U postgres -d bondhu_cron -f "$HERE/invariant.sql"); echo "$line"
    invariant_holds "$line"
    record "$1: every insight applied exactly once in the new cluster" $?
    [ "$(restore_psql -Atc "SELECT incarnation FROM bondhu.pipeline_state")" = 2 ]
    record "$1: the new cluster is a new incarnation" $?
}
check_restored "dump/restore"
[ "$(restore_psql -Atc "SELECT string_agg(jobname || ' ' || schedule, ', ' ORDER BY jobname) FROM cron.job")" = \
  "bondhu_insights_cleanup 15 4 * * 6, bondhu_personality_update 30 1 * * *" ]
record "dump/restore: the schedules came along" $?

log "a data-only restore under session_replication_role = replica (Supabase's recipe)"
# supabase db dump writes schema.sql and data.sql (pg_dump --schema-only, and
# --data-only --column-inserts); Supabase's docs restore them with
#   psql --single-transaction -v ON_ERROR_STOP=1 -f schema.sql -c 'SET session_replication_role = replica' -f data.sql
# Under replica role only triggers enabled ALWAYS fire, and the writes are a superuser's.
sudo -u postgres "$PG_BIN/pg_dump" -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres --schema-only \
    -f "$RESULTS/bondhu-schema.sql" bondhu_cron
sudo -u postgres "$PG_BIN/pg_dump" -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres --data-only --column-inserts \
    -f "$RESULTS/bondhu-data.sql" bondhu_cron
psql -X -q -h "$RESTORE_DIR" -p "$RESTORE_PORT" -U postgres -d postgres \
    -c "DROP DATABASE bondhu_cron WITH (FORCE)" -c "CREATE DATABASE bondhu_cron"
restore_psql --single-transaction -f "$RESULTS/bondhu-schema.sql" -c "SET session_replication_role = replica" \
    -f "$RESULTS/bondhu-data.sql" >"$RESULTS/data-only-restore.log" 2>&1
record "data-only restore: psql --single-transaction with ON_ERROR_STOP succeeds" $?
# the dumped positions and cursors are kept (a superuser's)
check_restored "data-only restore"

log "logical replication: a subscriber positions the insights it receives"
# In the restore cluster, with wal_level = logical: a publisher database and a subscriber
# database, each with bondhu. The publisher's positions (its transactions) mean nothing
# to the subscriber: kept, the subscriber's cursor, taken after the publisher wrote,
# would cover them and the insights would never apply there.
restore_psql -c "ALTER SYSTEM SET wal_level = logical" >/dev/null
stop_cluster "$RESTORE_DIR"; start_cluster "$RESTORE_DIR" "$RESTORE_PORT" bondhu_cron
for db in bondhu_publisher bondhu_subscriber; do
    psql -X -q -h "$RESTORE_DIR" -p "$RESTORE_PORT" -U postgres -d postgres -c "CREATE DATABASE $db"
    restore_psql -d "$db" -c "CREATE EXTENSION bondhu"
done
restore_psql -d bondhu_publisher -c "
    INSERT INTO chat_personality_insights (user_id, adjustments)
    SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, jsonb_build_object('openness', u % 7 - 3)
    FROM generate_series(1, 100) u, generate_series(1, 3)" \
    -c "CREATE PUBLICATION bondhu_insights FOR TABLE chat_personality_insights, bondhu.pipeline_state" \
    -c "SELECT FROM pg_create_logical_replication_slot('bondhu_subscriber', 'pgoutput')"
# the subscriber's global cursor now covers every transaction the publisher has committed
restore_psql -d bondhu_subscriber -c "SELECT bondhu_update_all()" >/dev/null
subscriber_state="SELECT format('%s %s %s', incarnation, system_identifier, applied_xmax) FROM bondhu.pipeline_state"
state_before=$(restore_psql -d bondhu_subscriber -Atc "$subscriber_state")
restore_psql -d bondhu_subscriber -c "CREATE SUBSCRIPTION bondhu_insights
    CONNECTION 'host=$RESTORE_DIR port=$RESTORE_PORT dbname=bondhu_publisher user=postgres'
    PUBLICATION bondhu_insights WITH (create_slot = false, slot_name = 'bondhu_subscriber')"
# rows the initial copy brings (300), then the publisher's state moved by its own run
# (the publication includes it, as FOR ALL TABLES would), then rows the apply worker
# brings (100)
restore_psql -d bondhu_publisher -c "SELECT bondhu_update_all()" >/dev/null
restore_psql -d bondhu_publisher -c "
    INSERT INTO chat_personality_insights (user_id, adjustments)
    SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, '{\"openness\": 0.5}'
    FROM generate_series(1, 100) u"
# until both tables are synchronized (then the apply worker has every change) and the
# last rows are there
for _ in $(seq 1 600); do
    [ "$(restore_psql -d bondhu_subscriber -Atc "SELECT (SELECT count(*) FROM chat_personality_insights) = 400
        AND NOT EXISTS (SELECT FROM pg_subscription_rel WHERE srsubstate <> 'r')")" = t ] && break
    sleep 0.1
done
state_after=$(restore_psql -d bondhu_subscriber -Atc "$subscriber_state")
echo "subscriber's pipeline state (incarnation, system_identifier, cursor xmax) before: $state_before, after: $state_after"
[ "$state_before" = "$state_after" ]
record "logical replication: the subscriber's pipeline state stays its own" $?
applied=$(restore_psql -d bondhu_subscriber -Atc "SELECT bondhu_update_all() ->> 'insights_processed'")
echo "insights applied on the subscriber: $applied of 400"
[ "$applied" = 400 ]
record "logical replication: every insight the subscriber receives is applied there" $?
line=$(psql -X -q -h "$RESTORE_DIR" -p "$RESTORE_PORT" -U postgres -d bondhu_subscriber -f "$HERE/invariant.sql"); echo "$line"
invariant_holds "$line"
record "logical replication: the subscriber's profiles count each insight exactly once" $?
restore_psql -d bondhu_subscriber -c "DROP SUBSCRIPTION bondhu_insights" >/dev/null

log "a physical standby (a read replica) answers the live profile and the metrics"
# Supabase's read replicas: the same reads there as on the primary, nothing written.
STANDBY_DIR=$ROOT/target/standby-cluster-pg$PG_VERSION
stop_cluster "$STANDBY_DIR"; rm -rf "$STANDBY_DIR"
mkdir -p "$STANDBY_DIR" && chown postgres:postgres "$STANDBY_DIR" && chmod 700 "$STANDBY_DIR"
restore_psql -d bondhu_subscriber -c "INSERT INTO chat_personality_insights (user_id, adjustments)
    VALUES ('00000000-0000-0000-0000-000000000001', '{\"openness\": 2}')"  # pending
sudo -u postgres "$PG_BIN/pg_basebackup" -h "$RESTORE_DIR" -p "$RESTORE_PORT" -U postgres -D "$STANDBY_DIR" -R -X stream
printf "port = %s\nunix_socket_directories = '%s'\n" $((CLUSTER_PORT + 5)) "$STANDBY_DIR" >>"$STANDBY_DIR/postgresql.conf"
start_cluster "$STANDBY_DIR" $((CLUSTER_PORT + 5)) bondhu_cron
standby_psql() { psql -X -q -v ON_ERROR_STOP=1 -h "$STANDBY_DIR" -p $((CLUSTER_PORT + 5)) -U postgres -d bondhu_subscriber "$@"; }
reads="SELECT bondhu_profile('00000000-0000-0000-0000-000000000001') - 'as_of' - 'next_update_at',
              bondhu_metrics() #>> '{backlog,pending_insights}'"
on_primary=$(restore_psql -d bondhu_subscriber -Atc "$reads")
on_standby=$(standby_psql -Atc "SELECT pg_is_in_recovery()" -c "$reads" 2>&1)
echo "primary: $on_primary"; echo "standby: $on_standby"
[ "$on_standby" = "t
$on_primary" ]
record "standby: bondhu_profile() and bondhu_metrics() answer as on the primary" $?
stop_cluster "$STANDBY_DIR"; rm -rf "$STANDBY_DIR"
stop_cluster "$RESTORE_DIR"

log "a copy of a cluster (same system_identifier) restores a dump of the original, which ran ahead"
# A base backup or a disk snapshot keeps the system_identifier. The original then runs
# 5,000 more transactions than the copy, and a self-service update: that profile's
# cursor is past the copy's next transaction id, and would cover the copy's new
# insights of that user (the global cursor is from before the 5,000).
ORIGINAL_DIR=$ROOT/target/original-cluster-pg$PG_VERSION
COPY_DIR=$ROOT/target/copy-cluster-pg$PG_VERSION
for dir in "$ORIGINAL_DIR" "$COPY_DIR"; do stop_cluster "$dir"; rm -rf "$dir"; done
start_cluster "$ORIGINAL_DIR" $((CLUSTER_PORT + 3)) bondhu_cron
stop_cluster "$ORIGINAL_DIR"
cp -a "$ORIGINAL_DIR" "$COPY_DIR"
printf "port = %s\nunix_socket_directories = '%s'\n" $((CLUSTER_PORT + 4)) "$COPY_DIR" >>"$COPY_DIR/postgresql.conf"
start_cluster "$ORIGINAL_DIR" $((CLUSTER_PORT + 3)) bondhu_cron
start_cluster "$COPY_DIR" $((CLUSTER_PORT + 4)) bondhu_cron
original_psql() { psql -X -q -v ON_ERROR_STOP=1 -h "$ORIGINAL_DIR" -p $((CLUSTER_PORT + 3)) -U postgres "$@"; }
copy_psql() { psql -X -q -v ON_ERROR_STOP=1 -h "$COPY_DIR" -p $((CLUSTER_PORT + 4)) -U postgres "$@"; }
original_psql -d postgres -c "CREATE DATABASE bondhu_clone"
original_psql -d bondhu_clone -c "CREATE EXTENSION bondhu" \
    -c "INSERT INTO chat_personality_insights (user_id, adjustments)
        SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, jsonb_build_object('openness', u % 5 - 2)
        FROM generate_series(1, 100) u, generate_series(1, 2)" \
    -c "SELECT FROM bondhu_update_all()" \
    -c "DO \$\$ BEGIN FOR i IN 1..5000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END \$\$" \
    -c "INSERT INTO chat_personality_insights (user_id, adjustments)
        SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, '{\"openness\": 1}'
        FROM generate_series(1, 100) u" \
    -c "SELECT FROM bondhu_update_personality('00000000-0000-0000-0000-000000000001')"
sudo -u postgres "$PG_BIN/pg_dump" -h "$ORIGINAL_DIR" -p $((CLUSTER_PORT + 3)) -U postgres -Fc \
    -f "$RESULTS/original.pgdump" bondhu_clone
copy_psql -d postgres -c "CREATE DATABASE bondhu_clone"
sudo -u postgres "$PG_BIN/pg_restore" -h "$COPY_DIR" -p $((CLUSTER_PORT + 4)) -U postgres --exit-on-error \
    -d bondhu_clone "$RESULTS/original.pgdump"
[ "$(original_psql -d bondhu_clone -Atc "SELECT system_identifier FROM pg_control_system()")" = \
  "$(copy_psql -d bondhu_clone -Atc "SELECT system_identifier FROM pg_control_system()")" ]
record "copy of a cluster: the same system_identifier, restored without error" $?
copy_psql -d bondhu_clone -c "INSERT INTO chat_personality_insights (user_id, adjustments)
    SELECT ('00000000-0000-0000-0000-' || lpad(u::text, 12, '0'))::uuid, '{\"openness\": 0.5}'
    FROM generate_series(1, 100) u"
applied=$(copy_psql -d bondhu_clone -Atc "SELECT bondhu_update_all() ->> 'insights_processed'")
echo "insights applied in the copy: $applied of 199 (99 pending in the dump, 100 written after the restore)"
line=$(copy_psql -d bondhu_clone -f "$HERE/invariant.sql"); echo "$line"
[ "$applied" = 199 ] && invariant_holds "$line"
record "copy of a cluster: the dump's pending insights and the copy's new ones applied once" $?
[ "$(copy_psql -d bondhu_clone -Atc "SELECT incarnation FROM bondhu.pipeline_state")" = 2 ]
record "copy of a cluster: the restored state starts a new incarnation" $?
for dir in "$ORIGINAL_DIR" "$COPY_DIR"; do stop_cluster "$dir"; rm -rf "$dir"; done

log "hostile input: a generated corpus of insight documents"
fresh_bondhu_db bondhu_hostile
log_offset=$(stat -c %s "$CLUSTER_DIR/server.log")
python3 "$HERE/hostile_corpus.py" --seed 7 --count 3000 --sql "$RESULTS/hostile.sql" --expect "$RESULTS/hostile.expect"
cluster_psql -d bondhu_hostile -v ON_ERROR_STOP=0 -f "$RESULTS/hostile.sql" >"$RESULTS/hostile-insert.log" 2>&1
refused_at_input=$(grep -c "^psql:.*ERROR" "$RESULTS/hostile-insert.log" || true)
got=$(cluster_psql -d bondhu_hostile -Atc "SELECT format('stored=%s applied=%s rejected=%s',
          (SELECT count(*) FROM chat_personality_insights), r ->> 'insights_processed', r ->> 'rejected_insights')
          FROM bondhu_update_all() r")
expected=$(cat "$RESULTS/hostile.expect")
echo "expected: $expected refused_at_input=$(sed -E 's/.*refused_at_input=([0-9]+).*/\1/' <<<"$(cat "$RESULTS/hostile.expect.input")")"
echo "got:      $got refused_at_input=$refused_at_input"
[ "$got" = "$expected" ] && [ "refused_at_input=$refused_at_input" = "$(cat "$RESULTS/hostile.expect.input")" ]
record "hostile input: every bad document rejected and counted, none crashes a backend" $?
! tail -c +$((log_offset + 1)) "$CLUSTER_DIR/server.log" | grep -qE "terminated by signal|was terminated"
record "hostile input: no backend crash in the server log" $?

if ! $reliability_sourced; then
    exit "${reliability_failed:-0}"
fi
