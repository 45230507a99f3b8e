#!/bin/bash
# Two builds interleaved on the three shapes the issues track: the
# README's (16 B, 256 in flight), client batches of 64, and 1 KiB commands
# in batches of 16. Usage: bench/ab-shapes.sh BEFORE AFTER
set -euo pipefail
for round in 1 2 3; do
  for b in "$1" "$2"; do
    echo "== readme $b $round"; $b bench --local 3 --json 2>/dev/null | tail -1
    echo "== batch64 $b $round"; $b bench --local 3 --json --batch 64 --inflight 32 2>/dev/null | tail -1
    echo "== 1k $b $round"; $b bench --local 3 --json --size 1024 --batch 16 --inflight 32 2>/dev/null | tail -1
  done
done
