#!/usr/bin/env bash
# Runs the model-based randomized tester (tests/model/model_test.py) against a running
# cluster: the socket directory $CLUSTER_DIR, port $CLUSTER_PORT, user postgres, with
# max_prepared_transactions > 0 and bondhu installed into its PostgreSQL.
#
#   CLUSTER_DIR=... CLUSTER_PORT=... bash tests/model/run.sh [SEEDS] [more model_test.py options]
#
# SEEDS is a range like 1-20 (the default, or $MODEL_SEEDS). The tester creates and drops
# its own databases (bondhu_model, bondhu_model_template). Exits with the tester's status
# (0: every seed passed). Sourced instead (e.g. by scripts/test.sh, which sets
# CLUSTER_DIR and CLUSTER_PORT without exporting them), it records the result with the
# caller's `record` function when there is one, and returns the status.

model_run() {
    local here seeds
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    seeds=${1:-${MODEL_SEEDS:-1-20}}
    [ $# -gt 0 ] && shift
    if [ -z "${CLUSTER_DIR:-}" ] || [ -z "${CLUSTER_PORT:-}" ]; then
        echo "tests/model/run.sh: set CLUSTER_DIR (socket directory) and CLUSTER_PORT" >&2
        return 2
    fi
    if ! /usr/bin/python3 -c 'import psycopg2' 2>/dev/null; then
        echo "installing python3-psycopg2" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-psycopg2 >/dev/null 2>&1 ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-psycopg2 >/dev/null; } ||
            { echo "tests/model/run.sh: cannot install python3-psycopg2" >&2; return 2; }
    fi
    /usr/bin/python3 "$here/model_test.py" --host "$CLUSTER_DIR" --port "$CLUSTER_PORT" \
        --dbname bondhu_model --seeds "$seeds" "$@"
}

if (return 0 2>/dev/null); then
    # sourced
    model_run "$@"
    model_status=$?
    if declare -F record >/dev/null; then
        record "model-based tester (tests/model)" "$model_status"
    fi
    return "$model_status"
else
    set -uo pipefail
    model_run "$@"
    exit $?
fi
