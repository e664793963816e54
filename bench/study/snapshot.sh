#!/usr/bin/env bash
# Stage a consistent copy of each running study store for a commit, without touching the live
# file: the stores are SQLite in WAL mode, so the file alone can lack the newest rows while a
# run is writing. The SQLite backup API copies a consistent state; git stores that copy under
# the store's own path. Usage: bash bench/study/snapshot.sh [DIR ...]  (default: a b)
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in "${@:-a b}"; do
  for name in $d; do
    live="bench/study/$name/results.sqlite"
    [ -f "$live" ] || continue
    tmp="$(mktemp)"
    python3 -c "import sqlite3, sys; s = sqlite3.connect(sys.argv[1]); t = sqlite3.connect(sys.argv[2]); s.backup(t); t.execute('pragma journal_mode=delete'); t.close(); print(sys.argv[1], s.execute('select count(*) from results').fetchone()[0], 'rows')" "$live" "$tmp"
    git update-index --add --cacheinfo "100644,$(git hash-object -w "$tmp"),$live"
    rm -f "$tmp"
  done
done
