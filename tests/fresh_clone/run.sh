# The README's first command works on a fresh clone and leaves a working system: the
# committed tree is cloned into a temporary folder (no target/ there) and
# `bash scripts/demo.sh` runs the demo (examples/demo.sql) to the end on a port of its
# own, the worked example's result among its output; its cluster's health is then
# 'healthy' with pg_cron's launcher running. Sourced by scripts/test.sh (set +e;
# uses its record); what it started is stopped and removed. Cargo's build folder is
# shared with this checkout's, so that the clone does not compile everything again.
log "the README's first command (scripts/demo.sh) on a fresh clone"
fresh_clone_check() {
    local clone port=$((CLUSTER_PORT + 1)) status
    clone=$(mktemp -d /tmp/bondhu-clone.XXXX) && chmod 755 "$clone"
    git clone -q "$ROOT" "$clone/bondhu" || return 1
    (cd "$clone/bondhu" && CARGO_TARGET_DIR="$ROOT/target" DEMO_PORT=$port bash scripts/demo.sh) \
        >"$RESULTS/fresh-clone-demo.log" 2>&1
    status=$?
    # the worked example of examples/demo.sql: four insights applied
    [ $status -eq 0 ] && ! grep -q '"insights_processed": 4,' "$RESULTS/fresh-clone-demo.log" && status=1
    if [ $status -eq 0 ]; then
        "$PG_BIN/psql" -X -At -h "$clone/bondhu/target/demo-cluster" -p "$port" -U postgres -d bondhu_demo \
            -c "SELECT bondhu_system_health() ->> 'status', bondhu_system_health() -> 'scheduler_running'" \
            >"$RESULTS/fresh-clone-health.txt" 2>&1
        grep -qx 'healthy|true' "$RESULTS/fresh-clone-health.txt" || status=1
    else
        tail -30 "$RESULTS/fresh-clone-demo.log"
    fi
    cat "$RESULTS/fresh-clone-health.txt" 2>/dev/null
    stop_cluster "$clone/bondhu/target/demo-cluster"
    rm -rf "$clone"
    return $status
}
fresh_clone_check
record "fresh clone: scripts/demo.sh runs examples/demo.sql to the end and leaves a healthy system with pg_cron running" $?
