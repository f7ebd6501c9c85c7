#!/usr/bin/env bash
# Make sure the PostgreSQL server the ledger tests use (127.0.0.1:5432, database `test`,
# trust auth) is up; start the machine's cluster if it is not. Idempotent.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi
for _ in $(seq 1 30); do
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    exit 0
  fi
  sleep 1
done
echo "PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started" >&2
exit 1
