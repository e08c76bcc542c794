#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite twice: on SQLite, then on a
# throw-away PostgreSQL started here on loopback. Extra arguments go to pytest.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh

# Debian packages: the PostgreSQL server, Dovecot (IMAP) and openssl for the mail tests, Redis
# for the scaled-out tests (each test run starts its own on a free port), and Chromium for the
# browser tests. Stop the PostgreSQL package from creating (and starting) its
# own cluster: the tests start their own servers on free loopback ports.
if [ "$(id -u)" = 0 ] && [ ! -e /etc/postgresql-common/createcluster.d/threadline.conf ]; then
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/threadline.conf
fi
apt_install postgresql dovecot-imapd openssl redis-server chromium fonts-liberation libatomic1
setup_venv requirements-dev.txt
PY=.venv/bin/python
export PYTHONDONTWRITEBYTECODE=1

echo "== lint and migrations"
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { echo "Code is not formatted: run .venv/bin/ruff format ." >&2; exit 1; }
$PY manage.py makemigrations --check --dry-run >/dev/null \
  || { echo "Model changes without a migration: run manage.py makemigrations" >&2; exit 1; }

echo "== tests on SQLite"
(unset DATABASE_URL; $PY -m pytest "$@")

echo "== tests on PostgreSQL"
source scripts/pg_temp.sh
pg_start
trap pg_stop EXIT
DATABASE_URL=$PG_URL $PY -m pytest "$@"
