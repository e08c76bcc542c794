#!/usr/bin/env bash
# The Gmail / Microsoft 365 sync benchmark against the fakes and a throw-away PostgreSQL.
#   bash bench/run_oauth_sync.sh [--messages N]
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
.venv/bin/python bench/oauth_sync.py "$@"
