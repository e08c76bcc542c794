#!/usr/bin/env bash
# The retention purge benchmark against a throw-away PostgreSQL (see bench/purge.py).
#   bash bench/run_purge.sh [--metadata N] [--bodies M]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/_run.sh
run_benchmark "postgresql" bench/purge.py "$@"
