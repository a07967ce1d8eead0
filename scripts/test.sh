#!/usr/bin/env bash
# Runs every test: Rust unit tests (cargo pgrx test), then the SQL regression suite and
# the isolation specs against a throwaway cluster with pg_cron (target/test-cluster).
source "$(dirname "$0")/common.sh"
CLUSTER_DIR=$ROOT/target/test-cluster
CLUSTER_PORT=28816
RESULTS=$ROOT/target/test-results

ensure_system
passed=0 failed=0
record() { # name, exit status
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok: $1"; else failed=$((failed + 1)); echo "FAILED: $1"; fi
}

log "Rust unit tests and #[pg_test]s"
mkdir -p "$ROOT/target/pgrx-test-data" && chown postgres:postgres "$ROOT/target/pgrx-test-data"
set +e
(cd "$ROOT" && cargo pgrx test pg15 --runas postgres --pgdata "$ROOT/target/pgrx-test-data")
record "cargo pgrx test" $?
set -e

install_extension
# A new cluster every run; pg_cron's launcher waits for its database to appear.
stop_cluster "$CLUSTER_DIR"
rm -rf "$CLUSTER_DIR"
start_cluster "$CLUSTER_DIR" "$CLUSTER_PORT" bondhu_cron
cluster_psql -d postgres -c "CREATE DATABASE bondhu_cron"
trap 'stop_cluster "$CLUSTER_DIR"' EXIT
rm -rf "$RESULTS" && mkdir -p "$RESULTS" && chown postgres:postgres "$RESULTS"
conn=(--host="$CLUSTER_DIR" --port="$CLUSTER_PORT" --user=postgres)

log "SQL regression suite (tests/pg_regress)"
regress_tests=$(cd "$ROOT/tests/pg_regress/sql" && ls *.sql | sed 's/\.sql$//' | sort)
set +e
for t in $regress_tests; do
    sudo -u postgres "$PGXS_TEST/regress/pg_regress" "${conn[@]}" --dbname=bondhu_regress \
        --inputdir="$ROOT/tests/pg_regress" --outputdir="$RESULTS/regress-$t" "$t" >"$RESULTS/regress-$t.log" 2>&1
    status=$?
    [ $status -eq 0 ] || cat "$RESULTS/regress-$t/regression.diffs" 2>/dev/null | head -80
    record "regress $t" $status
done

log "server log: bondhu's messages carry no user id"
grep -q 'may only update their own profile' "$CLUSTER_DIR/server.log"
record "the refusal reached the server log" $?
! grep -q '5ec00000-0000-4000-8000' "$CLUSTER_DIR/server.log"
record "no user id of the security test in the server log" $?

log "pg_cron suite (tests/cron), in the cron database"
cron_tests=$(cd "$ROOT/tests/cron/sql" && ls *.sql | sed 's/\.sql$//' | sort)
for t in $cron_tests; do
    sudo -u postgres "$PGXS_TEST/regress/pg_regress" "${conn[@]}" --use-existing --dbname=bondhu_cron \
        --inputdir="$ROOT/tests/cron" --outputdir="$RESULTS/cron-$t" "$t" >"$RESULTS/cron-$t.log" 2>&1
    status=$?
    [ $status -eq 0 ] || cat "$RESULTS/cron-$t/regression.diffs" 2>/dev/null | head -80
    record "cron $t" $status
done

log "upgrades: each earlier version plus its upgrade scripts equals a fresh install"
cp "$ROOT"/sql/archive/bondhu--*.sql "$("$PG_CONFIG" --sharedir)/extension/"
fingerprint() { cluster_psql -d "$1" -f "$ROOT/tests/upgrade/fingerprint.sql"; }
recreate_database bondhu_fresh >/dev/null
cluster_psql -d bondhu_fresh -c "CREATE EXTENSION bondhu"
fingerprint bondhu_fresh >"$RESULTS/fingerprint-fresh.txt"
for script in "$ROOT"/sql/archive/bondhu--*.sql; do
    version=$(basename "$script" .sql | sed 's/^bondhu--//')
    recreate_database bondhu_upgraded >/dev/null
    cluster_psql -d bondhu_upgraded -c "CREATE EXTENSION bondhu VERSION '$version'" -c "ALTER EXTENSION bondhu UPDATE"
    fingerprint bondhu_upgraded >"$RESULTS/fingerprint-from-$version.txt"
    diff -u "$RESULTS/fingerprint-fresh.txt" "$RESULTS/fingerprint-from-$version.txt"
    record "upgrade from $version" $?
done

log "isolation specs (tests/isolation)"
iso_tests=$(cd "$ROOT/tests/isolation/specs" && ls *.spec | sed 's/\.spec$//' | sort)
for t in $iso_tests; do
    sudo -u postgres "$PGXS_TEST/isolation/pg_isolation_regress" "${conn[@]}" --dbname=bondhu_isolation \
        --inputdir="$ROOT/tests/isolation" --outputdir="$RESULTS/isolation-$t" "$t" >"$RESULTS/isolation-$t.log" 2>&1
    status=$?
    [ $status -eq 0 ] || cat "$RESULTS/isolation-$t/output_iso/regression.diffs" "$RESULTS/isolation-$t/regression.diffs" 2>/dev/null | head -80
    record "isolation $t" $status
done

source "$ROOT/tests/reliability/run.sh"
set -e

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
