#!/usr/bin/env bash
# Makes sure the local PostgreSQL (127.0.0.1:5432, db test) and MariaDB (127.0.0.1:3306, db test)
# that the tests and the sample pipeline use are up. They are normally started with the machine;
# this starts them (with the machine's own commands) only when they are down, and creates the
# `test` databases if missing. Never stops anything.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
my_up() { mariadb-admin --protocol=TCP -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; }

if ! command -v psql >/dev/null || ! command -v mariadb >/dev/null; then
  echo "services: installing the PostgreSQL and MariaDB clients (Debian packages)" >&2
  apt-get update -qq && apt-get install -y -qq postgresql-client mariadb-client >/dev/null
fi

if ! pg_up; then
  echo "services: PostgreSQL is down; starting it" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! my_up; then
  echo "services: MariaDB is down; starting it" >&2
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 30); do my_up && break; sleep 1; done
fi
pg_up || { echo "services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
my_up || { echo "services: MariaDB is not reachable on 127.0.0.1:3306" >&2; exit 1; }

psql -qX -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
  || psql -qX -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test"
mariadb --protocol=TCP -h 127.0.0.1 -u root -e "CREATE DATABASE IF NOT EXISTS test"
echo "services: PostgreSQL and MariaDB are up" >&2
