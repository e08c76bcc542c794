#!/usr/bin/env bash
# The watchers benchmark against a throw-away PostgreSQL (see bench/watchers.py).
#   bash bench/run_watchers.sh [--mailboxes N] [--watchers W] [--replies R] [--rate PER_SECOND]
#                              [--baseline-replies B] [--security ssl|plain]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/_run.sh
run_benchmark "postgresql dovecot-imapd openssl" bench/watchers.py "$@"
