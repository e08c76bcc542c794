#!/usr/bin/env bash
# The 10,000-mailbox watchers simulation against the Graph fake and a throw-away PostgreSQL
# (see bench/watchers_sim.py).
#   bash bench/run_watchers_sim.sh [--mailboxes N] [--watchers W]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/_run.sh
run_benchmark "postgresql" bench/watchers_sim.py "$@"
