#!/usr/bin/env bash
# The IMAP sync benchmark against a throw-away PostgreSQL (see bench/imap_sync.py).
#   bash bench/run_imap_sync.sh [--messages N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh
apt_install postgresql dovecot-imapd openssl
setup_venv requirements-dev.txt
source scripts/pg_temp.sh
pg_start
trap pg_stop EXIT
export DATABASE_URL=$PG_URL
.venv/bin/python manage.py migrate --noinput -v 0
.venv/bin/python bench/imap_sync.py "$@"
