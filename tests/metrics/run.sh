# Sourced by scripts/test.sh (uses its cluster_psql and record): every query of
# examples/postgres_exporter.yml runs as bondhu_operator, returns a row, and has exactly
# the columns its metrics name.
log "metrics: the queries of examples/postgres_exporter.yml"
recreate_database bondhu_metrics >/dev/null
cluster_psql -d bondhu_metrics -q -c "SET client_min_messages = warning" -c "CREATE EXTENSION bondhu" \
    -c "INSERT INTO chat_personality_insights (user_id, adjustments) VALUES (gen_random_uuid(), '{\"openness\": 1}')" \
    -c "SELECT bondhu_update_all()" >/dev/null
python3 - "$ROOT/examples/postgres_exporter.yml" >"$RESULTS/exporter-queries.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for block in re.split(r'^(?=\w+:\s*$)', text, flags=re.M):
    m = re.match(r'(\w+):\s*\n  query: \|\n((?:    .*\n|\n)+)  metrics:\n', block)
    if m:
        names = re.findall(r'^    - (\w+):', block, flags=re.M)
        print(m.group(1) + '\t' + ','.join(names) + '\t' + ' '.join(l.strip() for l in m.group(2).splitlines()))
PY
exporter_queries=0
while IFS=$'\t' read -r name columns query; do
    exporter_queries=$((exporter_queries + 1))
    out=$(cluster_psql -d bondhu_metrics -v ON_ERROR_STOP=1 --csv -c "SET ROLE bondhu_operator" -c "$query" 2>&1)
    header=$(echo "$out" | sed -n 1p)
    rows=$(echo "$out" | tail -n +2 | grep -c .)
    [ "$header" = "$columns" ] && [ "$rows" -ge 1 ]
    status=$?
    [ $status -eq 0 ] || echo "$name: columns '$header' (want '$columns'), $rows rows: $out"
    record "metrics: exporter query $name" $status
done <"$RESULTS/exporter-queries.txt"
[ "$exporter_queries" -eq 3 ]
record "metrics: the exporter file has its 3 queries" $?
