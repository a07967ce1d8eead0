#!/usr/bin/env bash
# Builds an installable package of bondhu for each PostgreSQL major given (default: 15 16
# 18), with `cargo pgrx package`: target/packages/bondhu-<version>-pg<major>.tar.gz. Each
# tarball holds the library and the SQL files under paths relative to the PostgreSQL
# installation's prefix (the folder that holds bin/, lib/ and share/, as
# `pg_config --bindir`/..), so it unpacks over any stock installation of that major:
#   tar -C "$(pg_config --bindir)/.." -xzf bondhu-0.3.0-pg18.tar.gz
# For Debian's PostgreSQL 15 that prefix is /usr/lib/postgresql/15 for the library, but
# the SQL files live in /usr/share/postgresql/15: its tarball is relative to / instead.
source "$(dirname "$0")/common.sh"
versions=("${@:-15 16 18}")
read -ra versions <<<"${versions[*]}"
ensure_system "${versions[@]}"
version=$(sed -nE 's/^version = "([^"]+)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
out=$ROOT/target/packages
mkdir -p "$out"

for major in "${versions[@]}"; do
    pg_config=$(pg_home "$major")/bin/pg_config
    log "packaging bondhu $version for $("$pg_config" --version)"
    (cd "$ROOT" && cargo pgrx package --pg-config "$pg_config" --no-default-features --features "pg$major" \
        >"$ROOT/target/package-pg$major.log" 2>&1) || { tail -40 "$ROOT/target/package-pg$major.log" >&2; exit 1; }
    # cargo pgrx package lays the files out under the build's absolute paths
    staged=$ROOT/target/release/bondhu-pg$major
    if [ "$major" = 15 ]; then
        base=$staged
    else
        base=$staged$(cd "$(dirname "$pg_config")/.." && pwd)
    fi
    tar -C "$base" -czf "$out/bondhu-$version-pg$major.tar.gz" .
    echo "$out/bondhu-$version-pg$major.tar.gz"
done
