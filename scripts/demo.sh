#!/usr/bin/env bash
# The main job: set up the machine, build and install bondhu, start a throwaway cluster
# with pg_cron (target/demo-cluster, port 28815 or $DEMO_PORT) and run the demo
# (examples/demo.sql).
source "$(dirname "$0")/common.sh"
CLUSTER_DIR=$ROOT/target/demo-cluster
CLUSTER_PORT=${DEMO_PORT:-28815}

ensure_system
install_extension --release
start_cluster "$CLUSTER_DIR" "$CLUSTER_PORT" bondhu_demo
recreate_database bondhu_demo >/dev/null
# pg_cron's launcher ends when its database is dropped and does not come back by itself
sudo -u postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR" -l "$CLUSTER_DIR/server.log" -m fast -w restart >/dev/null
cluster_psql -d bondhu_demo -f "$ROOT/examples/demo.sql"
log "demo cluster left running: psql -h $CLUSTER_DIR -p $CLUSTER_PORT -U postgres bondhu_demo"
