# Shared by scripts/benchmark.sh and scripts/large_run.sh. Sourced after common.sh, not
# run: the release build of bondhu in the benchmarks' own cluster
# (target/benchmark-cluster, port 28819), and what both measure with.
CLUSTER_DIR=$ROOT/target/benchmark-cluster
CLUSTER_PORT=28819
DB=bondhu_benchmark

sql() { cluster_psql -d "$DB" -At "$@"; }

# Builds and installs the release extension, starts the cluster, and makes $DB afresh
# with bondhu installed.
benchmark_setup() {
    ensure_system
    install_extension --release
    start_cluster "$CLUSTER_DIR" "$CLUSTER_PORT" bondhu_cron
    recreate_database "$DB" >/dev/null
    sql -c "CREATE EXTENSION bondhu" >/dev/null
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
