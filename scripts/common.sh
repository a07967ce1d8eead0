# Shared by scripts/demo.sh, scripts/test.sh and scripts/benchmark.sh. Sourced, not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BIN/pg_config
PGXS_TEST=/usr/lib/postgresql/15/lib/pgxs/src/test
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\n== %s\n' "$*" >&2; }

# Everything a fresh Debian 12 machine with Rust and postgresql-15 lacks. Idempotent.
ensure_system() {
    local pkgs=(postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgtap libclang-dev clang sudo python3-psycopg2)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! cargo pgrx --version 2>/dev/null | grep -q '0.18.1'; then
        log "installing cargo-pgrx 0.18.1"
        cargo install cargo-pgrx --version 0.18.1 --locked
    fi
    if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        cargo pgrx init --pg15 "$PG_CONFIG"
    fi
}

# Builds the extension and installs it into the system's PostgreSQL 15 directories.
install_extension() {
    log "building and installing bondhu ${*:-(debug)}"
    mkdir -p "$ROOT/target"
    (cd "$ROOT" && cargo pgrx install --pg-config "$PG_CONFIG" "$@" >"$ROOT/target/install.log" 2>&1) ||
        { cat "$ROOT/target/install.log" >&2; return 1; }
}

# A throwaway cluster of our own: data in $1, port $2, pg_cron preloaded for database
# $3. Runs as the postgres user (initdb refuses root); reached through a socket in $1.
start_cluster() {
    local dir=$1 port=$2 cron_db=$3
    if [ ! -f "$dir/PG_VERSION" ]; then
        log "creating cluster in $dir"
        mkdir -p "$dir"
        chown postgres:postgres "$dir"
        chmod 700 "$dir"
        sudo -u postgres "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >>"$dir/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_cron'
cron.database_name = '$cron_db'
cron.use_background_workers = on
max_worker_processes = 16
max_connections = 60
max_prepared_transactions = 20
shared_buffers = 1GB
work_mem = 64MB
maintenance_work_mem = 512MB
max_wal_size = 8GB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
logging_collector = off
CONF
    fi
    if ! sudo -u postgres "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        sudo -u postgres "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
    fi
}

stop_cluster() {
    sudo -u postgres "$PG_BIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true
}

# psql against the cluster in $CLUSTER_DIR on $CLUSTER_PORT.
cluster_psql() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres "$@"
}

recreate_database() {
    cluster_psql -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}
