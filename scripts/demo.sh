#!/usr/bin/env bash
# The README's main job: on a fresh machine, start the S3 emulator, seed sample source data in the
# local MariaDB and PostgreSQL, and run ductwork end to end against them, printing each step's
# JSON summary. Leaves the emulator's data in $DEMO_DIR (default: a temp dir) for a look.
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

echo "demo: seeding MariaDB database ductwork_demo and PostgreSQL schema ductwork_demo" >&2
mariadb --protocol=TCP -h 127.0.0.1 -u root --default-character-set=utf8mb4 <<'SQL'
CREATE DATABASE IF NOT EXISTS ductwork_demo CHARACTER SET utf8mb4;
USE ductwork_demo;
DROP TABLE IF EXISTS users;
CREATE TABLE users (id INT PRIMARY KEY, user_name VARCHAR(100), user_email VARCHAR(255), created_at DATETIME(6));
INSERT INTO users
SELECT seq, CONCAT('user ', seq, IF(seq % 10 = 0, ' 😀', IF(seq % 10 = 1, '\ttabbed\\back', ''))),
       IF(seq % 7 = 0, NULL, IF(seq % 7 = 1, '', CONCAT('user', seq, '@example.com'))),
       TIMESTAMP('2026-01-01') + INTERVAL seq SECOND
FROM seq_1_to_10000;
SQL
psql -qX -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 <<'SQL'
DROP SCHEMA IF EXISTS ductwork_demo CASCADE;
CREATE SCHEMA ductwork_demo;
CREATE TABLE ductwork_demo.events AS
SELECT g AS id, (ARRAY['view','click',''])[1 + g % 3] AS kind,
       CASE WHEN g % 5 = 0 THEN NULL ELSE E'line one\nline two\r\n\\N ' || g END AS note,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' AS at, g * 0.25 AS amount
FROM generate_series(1, 10000) g;
SQL

echo "demo: extract MariaDB users -> s3://etl-bucket/demo/users/" >&2
"$BIN" extract --source mysql://root@127.0.0.1:3306/ductwork_demo --table users --to s3://etl-bucket/demo/users/
echo "demo: extract PostgreSQL events -> s3://etl-bucket/demo/events/" >&2
"$BIN" extract --source postgres://postgres@127.0.0.1:5432/test --table ductwork_demo.events --to s3://etl-bucket/demo/events/
echo "demo: done; the emulator's files are under $DEMO_DIR/s3" >&2
