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
# BCC/forward logging: mail to the teams' logging addresses (see the Team page).
$PY manage.py run_inbound_smtp --host 127.0.0.1 --port "${INBOUND_SMTP_PORT:-2525}" &
INBOUND=$!
SERVER=
trap 'kill $QCLUSTER $INBOUND $SERVER 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM

echo
echo "Threadline is running at http://127.0.0.1:$PORT/  (stop with Ctrl-C)"
echo "Demo login: demo@threadline.test / threadline-demo"
echo "Logging addresses (BCC/forward) are received on 127.0.0.1:${INBOUND_SMTP_PORT:-2525}"
echo
# In the background too, with `wait`: bash runs its trap as soon as a signal comes (while a
# foreground command runs, it would wait for that command first), so stopping this script
# in any way (Ctrl-C, kill, a supervisor) stops all three.
$PY manage.py runserver "127.0.0.1:$PORT" &
SERVER=$!
wait $SERVER
