#!/usr/bin/env bash
# Set up and run Threadline locally: SQLite, the ORM task broker, demo data.
#   bash scripts/run.sh            (PORT=8000, INBOUND_SMTP_PORT=2525 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh
setup_venv requirements.txt

PY=.venv/bin/python
PORT=${PORT:-8000}
INBOUND_SMTP_PORT=${INBOUND_SMTP_PORT:-2525}
$PY manage.py migrate --noinput -v 0  # also creates the sync and purge schedules
$PY manage.py load_demo_data

# Each service runs in a session of its own, so a Ctrl-C from the terminal reaches only this
# script, which then stops each service exactly once: the qcluster deadlocks when it gets a
# second signal while stopping (the terminal's SIGINT and then ours). Whatever has not
# stopped after STOP_SECONDS is killed, with its children.
STOP_SECONDS=10
SERVICES=()
start() {
  setsid "$@" &
  SERVICES+=($!)
}
alive() {
  local pid
  for pid in "${SERVICES[@]}"; do
    kill -0 -- "-$pid" 2>/dev/null && return 0
  done
  return 1
}
stop_all() {
  # A second Ctrl-C (impatience) must not cut the stopping short: it is bounded anyway.
  trap '' INT TERM
  trap - EXIT
  local pid tries=$((STOP_SECONDS * 5))
  for pid in "${SERVICES[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  while alive && [ $tries -gt 0 ]; do
    sleep 0.2
    tries=$((tries - 1))
  done
  for pid in "${SERVICES[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "Threadline stopped."
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

start $PY manage.py qcluster
# Mailbox watchers: replies reach the timeline seconds after they arrive (IMAP IDLE).
start $PY manage.py watch_mailboxes
# BCC/forward logging: mail to the teams' logging addresses (see the Team page).
start $PY manage.py run_inbound_smtp --host 127.0.0.1 --port "$INBOUND_SMTP_PORT"
start $PY manage.py runserver "127.0.0.1:$PORT"
SERVER=${SERVICES[-1]}

echo
echo "Threadline is running at http://127.0.0.1:$PORT/  (stop with Ctrl-C)"
echo "Demo login: demo@threadline.test / threadline-demo"
echo "Logging addresses (BCC/forward) are received on 127.0.0.1:$INBOUND_SMTP_PORT"
echo
# `wait` returns as soon as a signal comes, and the trap runs; a foreground command would
# be waited for first.
wait "$SERVER"
