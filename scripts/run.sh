#!/usr/bin/env bash
# Set up and run Threadline locally: SQLite, the ORM task broker, demo data.
#   bash scripts/run.sh            (PORT=8000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh
setup_venv requirements.txt

PY=.venv/bin/python
PORT=${PORT:-8000}
$PY manage.py migrate --noinput -v 0
$PY manage.py setup_schedules
$PY manage.py load_demo_data

$PY manage.py qcluster &
QCLUSTER=$!
trap 'kill $QCLUSTER 2>/dev/null || true; wait $QCLUSTER 2>/dev/null || true' EXIT INT TERM

echo
echo "Threadline is running at http://127.0.0.1:$PORT/  (stop with Ctrl-C)"
echo "Demo login: demo@threadline.test / threadline-demo"
echo
$PY manage.py runserver "127.0.0.1:$PORT"
