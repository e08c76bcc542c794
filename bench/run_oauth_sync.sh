#!/usr/bin/env bash
# The Gmail / Microsoft 365 sync benchmark against the fakes and a throw-away PostgreSQL.
#   bash bench/run_oauth_sync.sh [--messages N]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/_run.sh
run_benchmark "postgresql" bench/oauth_sync.py "$@"
