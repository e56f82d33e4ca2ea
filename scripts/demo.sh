#!/usr/bin/env bash
# The README's main job: on a fresh machine, start the S3 emulator, seed sample source data in the
# local MariaDB (database userDb) and a fresh PostgreSQL warehouse database (ductwork_demo), and
# run Dataduct's own example pipeline, examples/users.yaml, end to end with `ductwork run`
# (extract -> load -> upsert -> primary-key and count checks), printing the per-step summary.
# Leaves the emulator's data in $DEMO_DIR (default: a temp dir) for a look.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
echo "demo: building ductwork and the S3 emulator" >&2
cargo build --quiet --bin ductwork --example s3_emulator
BIN=target/debug/ductwork
EMU=target/debug/examples/s3_emulator

DEMO_DIR=${DEMO_DIR:-$(mktemp -d -t ductwork-demo-XXXXXX)}
PORT=${DEMO_S3_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
"$EMU" --port "$PORT" --dir "$DEMO_DIR/s3" --bucket etl-bucket > "$DEMO_DIR/emulator.log" 2>&1 &
EMU_PID=$!
trap 'kill $EMU_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q listening "$DEMO_DIR/emulator.log" && break; sleep 0.1; done
grep -q listening "$DEMO_DIR/emulator.log" || { cat "$DEMO_DIR/emulator.log" >&2; exit 1; }

export DUCTWORK_S3_ENDPOINT="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true DUCTWORK_RUN_ID="demo-$(date -u +%Y%m%dT%H%M%SZ)"

echo "demo: seeding MariaDB userDb.users (10,000 rows with NULLs, '', tabs, backslashes, emoji)" >&2
mariadb --protocol=TCP -h 127.0.0.1 -u root --default-character-set=utf8mb4 <<'SQL'
SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES');
CREATE DATABASE IF NOT EXISTS userDb CHARACTER SET utf8mb4;
USE userDb;
DROP TABLE IF EXISTS users;
CREATE TABLE users (id INT PRIMARY KEY, user_name VARCHAR(100), user_email VARCHAR(255));
INSERT INTO users
SELECT seq,
       CASE seq % 10 WHEN 0 THEN CONCAT('user ', seq, ' 😀')
                     WHEN 1 THEN CONCAT('user ', seq, '\ttabbed\back')
                     WHEN 2 THEN NULL
                     WHEN 3 THEN ''
                     WHEN 4 THEN CONCAT('  spaced ', seq, '  ')
                     ELSE CONCAT('user ', seq) END,
       IF(seq % 7 = 0, NULL, IF(seq % 7 = 1, '', CONCAT('user', seq, '@example.com')))
FROM seq_1_to_10000;
UPDATE users SET user_name = REPLACE(user_name, '\t', CHAR(9)) WHERE id % 10 = 1;
SQL

echo "demo: creating the PostgreSQL warehouse database ductwork_demo (with a public.users view)" >&2
psql -qX -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
DROP DATABASE IF EXISTS ductwork_demo;
CREATE DATABASE ductwork_demo;
SQL
# Dataduct's example counts `SELECT user_id FROM users` in the warehouse: a view maps prod.users'
# key to that name in the default search_path. ductwork creates the table (and its schema) from
# the same file the pipeline uses, so that the view can exist before the first upsert.
"$BIN" -q --config examples/ductwork.toml sql --warehouse local --no-ledger \
    --table-def examples/tables/prod.users.sql --command 'SELECT 1' > /dev/null
psql -qX -h 127.0.0.1 -U postgres -d ductwork_demo -v ON_ERROR_STOP=1 \
    -c 'CREATE VIEW public.users AS SELECT id AS user_id, user_name, user_email FROM prod.users'

echo "demo: ductwork --config examples/ductwork.toml run examples/users.yaml --output-root s3://etl-bucket/ductwork/" >&2
set +e
"$BIN" --config examples/ductwork.toml run examples/users.yaml --output-root s3://etl-bucket/ductwork/ > "$DEMO_DIR/summary.json"
code=$?
set -e
python3 - "$DEMO_DIR/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"pipeline {s['pipeline']} run {s['run_id']}: {s['status']}")
for st in s["steps"]:
    extra = {k: st[k] for k in ("rows", "rows_loaded", "rows_inserted", "passed") if k in st}
    print(f"  {st['name']:<20} {st['type']:<22} {st['status']:<12} attempts={st.get('attempts', 0)} "
          f"{st.get('elapsed_ms', 0)} ms {json.dumps(extra) if extra else ''}")
print(f"marker: {s['marker']}")
PY
echo "demo: exit $code; the full summary is $DEMO_DIR/summary.json, the emulator's files are under $DEMO_DIR/s3" >&2
exit "$code"
