#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 (install and start it if needed).
set -uo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
usable() { psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1" >/dev/null 2>&1; }
if ready && usable && psql -h 127.0.0.1 -U postgres -tAc \
     "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1; then
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  echo "installing PostgreSQL…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
fi
ver=$(ls /etc/postgresql | sort -V | tail -n1)
# The tests connect as postgres over TCP without a password: trust loopback
# (a fresh Debian cluster asks for one). Only loopback addresses are trusted.
hba=/etc/postgresql/$ver/main/pg_hba.conf
if [ -w "$hba" ] && ! grep -q "ferryman-tests" "$hba"; then
  sed -i '1i host all all 127.0.0.1/32 trust # ferryman-tests\nhost all all ::1/128 trust # ferryman-tests' "$hba"
fi
pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null \
  || pg_ctlcluster --skip-systemctl-redirect "$ver" main reload 2>/dev/null || true
for _ in $(seq 1 30); do ready && break; sleep 1; done
if ! ready; then echo "PostgreSQL did not start" >&2; exit 1; fi
# trust auth for local tests, and the test database
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 \
  || su postgres -c "psql -c 'CREATE DATABASE test'" >/dev/null 2>&1 || true
