#!/usr/bin/env bash
# Runs every test: clippy, the Rust unit tests and #[pg_test]s (cargo pgrx test), then,
# against a throwaway cluster with pg_cron (target/test-cluster-pgVERSION), the SQL
# regression suite, the pg_cron suite, the upgrade fingerprints, the isolation specs,
# the model-based tester, the reliability scenarios, the metrics exporter's queries, and
# last the fresh clone (on 15) or package (on 16 and 18) check. Ends with the line
# "N passed, M failed".
#   --pg VERSION       on PostgreSQL 15 (the default), 16 or 18
#   --all              on each of them in turn (PostgreSQL 17: see the README)
#   --soak SECONDS     the model-based tester (tests/model) runs new random seeds for
#                      SECONDS instead of its fixed seeds 1-20
#   --suite NAME[:TEST]  only that suite (repeat for more): clippy, unit, pg_regress,
#                      cron, upgrade, isolation, model, reliability, metrics,
#                      fresh_clone (15), package (16, 18). With :TEST only that test of pg_regress, cron
#                      or isolation (pg_regress:core), or that version's upgrade
#                      (upgrade:0.2.0).
usage="usage: scripts/test.sh [--pg 15|16|18 | --all] [--soak SECONDS] [--suite NAME[:TEST]]..."
SUITES=(clippy unit pg_regress cron upgrade isolation model reliability metrics fresh_clone package)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
model_args=(1-20)
versions=()
selected=()
while [ $# -gt 0 ]; do
    case $1 in
        --soak) model_args=(1-20 --soak "${2:?$usage}"); shift 2 ;;
        --pg) versions=("${2:?$usage}"); shift 2 ;;
        --all) versions=(15 16 18); shift ;;
        --suite) selected+=("${2:?$usage}"); shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done

# Where the tests of each suite are, as "folder extension" ("" for suites without).
test_files() {
    case $1 in
        pg_regress | cron) echo "$ROOT/tests/$1/sql .sql" ;;
        isolation) echo "$ROOT/tests/isolation/specs .spec" ;;
        upgrade) echo "$ROOT/sql/archive .sql bondhu--" ;;
    esac
}
for choice in "${selected[@]}"; do
    name=${choice%%:*}
    [[ " ${SUITES[*]} " == *" $name "* ]] ||
        { echo "scripts/test.sh: no suite '$name' (suites: ${SUITES[*]})" >&2; exit 2; }
    [[ $choice == *:* ]] || continue
    read -r dir ext prefix <<<"$(test_files "$name")"
    [ -n "$dir" ] || { echo "scripts/test.sh: suite '$name' has no tests to pick from" >&2; exit 2; }
    [ -f "$dir/${prefix:-}${choice#*:}$ext" ] ||
        { echo "scripts/test.sh: no test '${choice#*:}' in $name ($dir)" >&2; exit 2; }
done

if [ ${#versions[@]} -gt 1 ]; then
    # each version in a run of its own; one closing line for all
    pass=()
    [ ${#model_args[@]} -gt 1 ] && pass+=(--soak "${model_args[2]}")
    for choice in "${selected[@]}"; do pass+=(--suite "$choice"); done
    total_passed=0 total_failed=0
    for v in "${versions[@]}"; do
        bash "$0" --pg "$v" "${pass[@]}" | tee "/tmp/bondhu-test-pg$v.log"
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

# Does this run include suite $1? (Every suite when none is named.)
runs() {
    local choice
    [ ${#selected[@]} -eq 0 ] && return 0
    for choice in "${selected[@]}"; do [ "${choice%%:*}" = "$1" ] && return 0; done
    return 1
}
# The tests of suite $1 this run includes: all of them (in name order), or those named.
picked() {
    local suite=$1 dir ext prefix choice named=()
    read -r dir ext prefix <<<"$(test_files "$suite")"
    for choice in "${selected[@]}"; do
        [ "${choice%%:*}" = "$suite" ] || continue
        [[ $choice == *:* ]] || { named=(); break; }
        named+=("${choice#*:}")
    done
    if [ ${#named[@]} -gt 0 ]; then
        printf '%s\n' "${named[@]}"
    else
        (cd "$dir" && ls "${prefix:-}"*"$ext" | sed -e "s/$ext\$//" -e "s/^${prefix:-}//" | sort)
    fi
}
# Is a suite that needs the test cluster in this run?
needs_cluster() {
    local suite
    for suite in pg_regress cron upgrade isolation model reliability metrics fresh_clone package; do
        runs "$suite" && return 0
    done
    return 1
}

ensure_system
PGXS_TEST=$(pgxs_test)
# Cargo's builds for one version take about 2 GB under target/; a full disk shows up
# later as a linker's bus error or "No space left on device", so say it first.
free_gb=$(df -P -BG "$ROOT" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
[ "$free_gb" -ge 4 ] || log "WARNING: only ${free_gb} GB free under $ROOT; a run needs about 4 GB per PostgreSQL version"
log "testing on $("$PG_CONFIG" --version)${selected[*]:+: ${selected[*]}}"
passed=0 failed=0
record() { # name, exit status
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok: $1"; else failed=$((failed + 1)); echo "FAILED: $1"; fi
}
set +e

if runs clippy; then
    log "clippy: every unsafe block has its SAFETY note, every unsafe fn its Safety section (Cargo.toml [lints])"
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
    (cd "$ROOT" && cargo clippy --no-default-features --features "pg$PG_VERSION" --all-targets)
    record "clippy" $?
fi

if runs unit; then
    log "Rust unit tests and #[pg_test]s"
    mkdir -p "$ROOT/target/pgrx-test-data-pg$PG_VERSION" && chown postgres:postgres "$ROOT/target/pgrx-test-data-pg$PG_VERSION"
    (cd "$ROOT" && cargo pgrx test "pg$PG_VERSION" --runas postgres --pgdata "$ROOT/target/pgrx-test-data-pg$PG_VERSION") 2>&1 |
        tee "$ROOT/target/cargo-pgrx-test-pg$PG_VERSION.log"
    record "cargo pgrx test" "${PIPESTATUS[0]}"
    # the #[pg_test]s need a Postgres of their own: each one of them ran, none was left out
    pg_tests=$(grep -cE '^\s*#\[pg_test\]' "$ROOT/src/pg_tests.rs")
    [ "$pg_tests" -gt 0 ] &&
        [ "$(grep -cE '^test pg_tests::.* \.\.\. ok$' "$ROOT/target/cargo-pgrx-test-pg$PG_VERSION.log")" = "$pg_tests" ]
    record "#[pg_test]s: all $pg_tests of src/pg_tests.rs ran and passed" $?
fi

if needs_cluster; then
    set -e
    install_extension
    # A new cluster every run; pg_cron's launcher waits for its database to appear.
    stop_cluster "$CLUSTER_DIR"
    rm -rf "$CLUSTER_DIR"
    start_cluster "$CLUSTER_DIR" "$CLUSTER_PORT" bondhu_cron
    cluster_psql -d postgres -c "CREATE DATABASE bondhu_cron"
    trap 'stop_cluster "$CLUSTER_DIR"' EXIT
    rm -rf "$RESULTS" && mkdir -p "$RESULTS" && chown postgres:postgres "$RESULTS"
    # earlier versions' install scripts, for the upgrade tests (tests/cron's too)
    cp "$ROOT"/sql/archive/bondhu--*.sql "$("$PG_CONFIG" --sharedir)/extension/"
    set +e
fi
conn=(--host="$CLUSTER_DIR" --port="$CLUSTER_PORT" --user=postgres --bindir="$PG_BIN")

# Runs the picked tests of tests/<suite> with pg_regress against database $2 (more options
# after), each after the command in $BEFORE_EACH_TEST, if set.
regress_suite() { # suite database [pg_regress options]
    local suite=$1 database=$2 t status
    shift 2
    for t in $(picked "$suite"); do
        ${BEFORE_EACH_TEST:-}
        sudo -u postgres "$PGXS_TEST/regress/pg_regress" "${conn[@]}" "$@" --dbname="$database" \
            --inputdir="$ROOT/tests/$suite" --outputdir="$RESULTS/$suite-$t" "$t" >"$RESULTS/$suite-$t.log" 2>&1
        status=$?
        [ $status -eq 0 ] || head -80 "$RESULTS/$suite-$t/regression.diffs" 2>/dev/null
        record "$suite $t" $status
    done
}

if runs pg_regress; then
    log "SQL regression suite (tests/pg_regress)"
    regress_suite pg_regress bondhu_regress
    if picked pg_regress | grep -qx security; then
        log "server log: bondhu's messages carry no user id"
        grep -q 'may only read or update their own profile' "$CLUSTER_DIR/server.log"
        record "the refusal reached the server log" $?
        ! grep -q '5ec00000-0000-4000-8000' "$CLUSTER_DIR/server.log"
        record "no user id of the security test in the server log" $?
    fi
fi

if runs cron; then
    log "pg_cron suite (tests/cron), in the cron database, each test after a restart"
    # A pg_cron launcher of each test's own: the one that served the previous test (whose
    # pg_cron was dropped and created again while one of its jobs ended) was seen alive
    # but never starting a job again. pg_cron 1.4 does not restart a terminated launcher.
    restart_cluster() { stop_cluster "$CLUSTER_DIR" && start_cluster "$CLUSTER_DIR" "$CLUSTER_PORT" bondhu_cron; }
    BEFORE_EACH_TEST=restart_cluster regress_suite cron bondhu_cron --use-existing
fi

if runs upgrade; then
    log "upgrades: each earlier version plus its upgrade scripts equals a fresh install"
    fingerprint() { cluster_psql -d "$1" -f "$ROOT/tests/upgrade/fingerprint.sql"; }
    recreate_database bondhu_fresh >/dev/null
    cluster_psql -d bondhu_fresh -c "CREATE EXTENSION bondhu"
    fingerprint bondhu_fresh >"$RESULTS/fingerprint-fresh.txt"
    for version in $(picked upgrade); do
        recreate_database bondhu_upgraded >/dev/null
        cluster_psql -d bondhu_upgraded -c "CREATE EXTENSION bondhu VERSION '$version'" -c "ALTER EXTENSION bondhu UPDATE"
        fingerprint bondhu_upgraded >"$RESULTS/fingerprint-from-$version.txt"
        diff -u "$RESULTS/fingerprint-fresh.txt" "$RESULTS/fingerprint-from-$version.txt"
        record "upgrade from $version" $?
    done
fi

if runs isolation; then
    log "isolation specs (tests/isolation)"
    for t in $(picked isolation); do
        sudo -u postgres "$PGXS_TEST/isolation/pg_isolation_regress" "${conn[@]}" --dbname=bondhu_isolation \
            --inputdir="$ROOT/tests/isolation" --outputdir="$RESULTS/isolation-$t" "$t" >"$RESULTS/isolation-$t.log" 2>&1
        status=$?
        [ $status -eq 0 ] || cat "$RESULTS/isolation-$t/output_iso/regression.diffs" "$RESULTS/isolation-$t/regression.diffs" 2>/dev/null | head -80
        record "isolation $t" $status
    done
fi

if runs model; then
    log "model-based tester (tests/model): random programs of several sessions against an exact oracle"
    source "$ROOT/tests/model/run.sh" "${model_args[@]}"
fi

if runs reliability; then
    source "$ROOT/tests/reliability/run.sh"
fi

if runs metrics; then
    source "$ROOT/tests/metrics/run.sh"
fi

# Last: the fresh clone installs the committed tree's build, which is not this tree's
# when it has changes. The fresh clone runs on Debian's PostgreSQL 15, the package check
# on PyPI's builds.
for suite in fresh_clone package; do
    runs "$suite" || continue
    case $suite:$PG_VERSION in
        fresh_clone:15 | package:16 | package:18) source "$ROOT/tests/$suite/run.sh" ;;
        *) [ ${#selected[@]} -eq 0 ] || log "$suite: not on PostgreSQL $PG_VERSION (fresh_clone runs on 15, package on 16 and 18)" ;;
    esac
done

# A cluster that passed everything is gone (up to a GB of disk); one that failed stays
# for a look.
if [ "$failed" -eq 0 ] && needs_cluster; then
    stop_cluster "$CLUSTER_DIR"
    rm -rf "$CLUSTER_DIR"
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
