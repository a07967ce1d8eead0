# Shared by scripts/benchmark.sh and scripts/large_run.sh. Sourced after common.sh, not
# run: the release build of bondhu in the benchmarks' own cluster
# (target/benchmark-cluster, port 28819 or BONDHU_BENCH_PORT), and what both measure with.
# Durability is production's (fsync, full_page_writes, synchronous_commit on) unless
# FAST_DURABILITY=1 (the scripts' --fast): then all three are off, and the reports say so.
CLUSTER_DIR=$ROOT/target/benchmark-cluster
CLUSTER_PORT=${BONDHU_BENCH_PORT:-28819}
DB=bondhu_benchmark
FAST_DURABILITY=${FAST_DURABILITY:-0}

sql() { cluster_psql -d "$DB" -At "$@"; }

# Builds and installs the release extension, starts the cluster, and makes $DB afresh
# with bondhu installed.
benchmark_setup() {
    ensure_system
    install_extension --release
    # a cluster left by another port or PostgreSQL version is made afresh
    if [ -f "$CLUSTER_DIR/PG_VERSION" ] && { [ "$(cat "$CLUSTER_DIR/PG_VERSION")" != "$PG_VERSION" ] ||
            ! grep -q "^port = $CLUSTER_PORT\$" "$CLUSTER_DIR/postgresql.conf"; }; then
        stop_cluster "$CLUSTER_DIR"
        rm -rf "$CLUSTER_DIR"
    fi
    start_cluster "$CLUSTER_DIR" "$CLUSTER_PORT" bondhu_cron
    # start_cluster writes the test clusters' fast settings; the benchmark sets its own
    local on=on
    [ "$FAST_DURABILITY" = 1 ] && on=off
    cluster_psql -d postgres -c "ALTER SYSTEM SET fsync = $on" -c "ALTER SYSTEM SET full_page_writes = $on" \
        -c "ALTER SYSTEM SET synchronous_commit = $on" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1
    recreate_database "$DB" >/dev/null
    sql -c "CREATE EXTENSION bondhu" >/dev/null
    # the role PostgREST gives a signed-in user, and what bondhu grants it
    sql -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
                CREATE ROLE authenticated NOLOGIN; END IF; END \$\$" -c "SELECT bondhu.grant_privileges()" >/dev/null
}

# The highest private memory (RssAnon, kB) of the backend with application_name $1
# while process $2 runs: VmHWM would count the shared buffers it touched.
peak_private_kb() {
    local peak=0 pid kb
    while kill -0 "$2" 2>/dev/null; do
        pid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'")
        if [ -n "$pid" ]; then
            kb=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ "${kb:-0}" -gt "$peak" ] && peak=$kb
        fi
        sleep 0.05
    done
    echo "$peak"
}

# "fsync=on, full_page_writes=on, synchronous_commit=on (production durability)", as the
# server has them.
durability() {
    local d
    d=$(sql -c "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings
                WHERE name IN ('fsync', 'full_page_writes', 'synchronous_commit')")
    if [ "$FAST_DURABILITY" = 1 ]; then echo "$d (FAST: not production durability; --fast)"
    else echo "$d (production durability)"; fi
}
