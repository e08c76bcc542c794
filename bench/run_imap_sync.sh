#!/usr/bin/env bash
# The IMAP sync benchmark against a throw-away PostgreSQL (see bench/imap_sync.py).
#   bash bench/run_imap_sync.sh [--messages N] [--profile DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/_run.sh
run_benchmark "postgresql dovecot-imapd openssl" bench/imap_sync.py "$@"
