#!/usr/bin/env bash
# The retention purge benchmark against a throw-away PostgreSQL (see bench/purge.py).
#   bash bench/run_purge.sh [--metadata N] [--bodies M]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh
apt_install postgresql
setup_venv requirements-dev.txt
source scripts/pg_temp.sh
pg_start
trap pg_stop EXIT
export DATABASE_URL=$PG_URL
.venv/bin/python manage.py migrate --noinput -v 0
.venv/bin/python bench/purge.py "$@"
