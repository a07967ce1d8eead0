#!/usr/bin/env bash
# Runs every test: Rust unit tests (cargo pgrx test), then the SQL regression suite, the
# pg_cron suite, the upgrade fingerprints, the isolation specs, the model-based tester
# and the reliability scenarios against a throwaway cluster with pg_cron
# (target/test-cluster).
#   --pg VERSION     on PostgreSQL 15 (the default), 16 or 18
#   --all            on each of them in turn (PostgreSQL 17: see the README)
#   --soak SECONDS   the model-based tester (tests/model) runs new random seeds for
#                    SECONDS instead of its fixed seeds 1-20
usage="usage: scripts/test.sh [--pg 15|16|18 | --all] [--soak SECONDS]"
model_args=(1-20)
versions=()
while [ $# -gt 0 ]; do
    case $1 in
        --soak) model_args=(1-20 --soak "${2:?$usage}"); shift 2 ;;
        --pg) versions=("${2:?$usage}"); shift 2 ;;
        --all) versions=(15 16 18); shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
if [ ${#versions[@]} -gt 1 ]; then
    # each version in a run of its own; one closing line for all
    total_passed=0 total_failed=0
    for v in "${versions[@]}"; do
        bash "$0" --pg "$v" ${model_args[1]:+--soak "${model_args[2]}"} | tee "/tmp/bondhu-test-pg$v.log"
        line=$(tail -n 1 "/tmp/bondhu-test-pg$v.log")
        if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
            total_passed=$((total_passed + BASH_REMATCH[1]))
            total_failed=$((total_failed + BASH_REMATCH[2]))
        else
            echo "FAILED: PostgreSQL $v: the run ended before its closing line"
            total_failed=$((total_failed + 1))
        fi
    done
    echo
    echo "$total_passed passed, $total_failed failed"
    [ "$total_failed" -eq 0 ]
    exit
fi
export PG_VERSION=${versions[0]:-${PG_VERSION:-15}}
source "$(dirname "$0")/common.sh"
CLUSTER_DIR=$ROOT/target/test-cluster-pg$PG_VERSION
CLUSTER_PORT=$((28816 + (PG_VERSION - 15) * 10))  # 28816, 28826, 28846: versions run side by side
RESULTS=$ROOT/target/test-results-pg$PG_VERSION

ensure_system
PGXS_TEST=$(pgxs_test)
log "testing on $("$PG_CONFIG" --version)"
passed=0 failed=0
record() { # name, exit status
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok: $1"; else failed=$((failed + 1)); echo "FAILED: $1"; fi
}

log "clippy: every unsafe block has its SAFETY note, every unsafe fn its Safety section (Cargo.toml [lints])"
set +e
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
(cd "$ROOT" && cargo clippy --no-default-features --features "pg$PG_VERSION" --all-targets)
record "clippy" $?
set -e

log "Rust unit tests and #[pg_test]s"
mkdir -p "$ROOT/target/pgrx-test-data-pg$PG_VERSION" && chown postgres:postgres "$ROOT/target/pgrx-test-data-pg$PG_VERSION"
set +e
(cd "$ROOT" && cargo pgrx test "pg$PG_VERSION" --runas postgres --pgdata "$ROOT/target/pgrx-test-data-pg$PG_VERSION")
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
conn=(--host="$CLUSTER_DIR" --port="$CLUSTER_PORT" --user=postgres --bindir="$PG_BIN")

# Runs every test of tests/<suite> with pg_regress against database $2 (more options after).
regress_suite() { # suite database [pg_regress options]
    local suite=$1 database=$2 t status
    shift 2
    for t in $(cd "$ROOT/tests/$suite/sql" && ls *.sql | sed 's/\.sql$//' | sort); do
        sudo -u postgres "$PGXS_TEST/regress/pg_regress" "${conn[@]}" "$@" --dbname="$database" \
            --inputdir="$ROOT/tests/$suite" --outputdir="$RESULTS/$suite-$t" "$t" >"$RESULTS/$suite-$t.log" 2>&1
        status=$?
        [ $status -eq 0 ] || head -80 "$RESULTS/$suite-$t/regression.diffs" 2>/dev/null
        record "$suite $t" $status
    done
}

log "SQL regression suite (tests/pg_regress)"
set +e
regress_suite pg_regress bondhu_regress

log "server log: bondhu's messages carry no user id"
grep -q 'may only update their own profile' "$CLUSTER_DIR/server.log"
record "the refusal reached the server log" $?
! grep -q '5ec00000-0000-4000-8000' "$CLUSTER_DIR/server.log"
record "no user id of the security test in the server log" $?

# earlier versions' install scripts, for the upgrade tests
cp "$ROOT"/sql/archive/bondhu--*.sql "$("$PG_CONFIG" --sharedir)/extension/"

log "pg_cron suite (tests/cron), in the cron database"
regress_suite cron bondhu_cron --use-existing

log "upgrades: each earlier version plus its upgrade scripts equals a fresh install"
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

if [ "$PG_VERSION" = 15 ]; then
    source "$ROOT/tests/fresh_clone/run.sh"
else
    source "$ROOT/tests/package/run.sh"
fi

log "model-based tester (tests/model): random programs of several sessions against an exact oracle"
source "$ROOT/tests/model/run.sh" "${model_args[@]}"

source "$ROOT/tests/reliability/run.sh"
set -e

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
