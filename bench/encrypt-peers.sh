#!/bin/bash
# The cost of --encrypt-peers: the same binary with and without it,
# interleaved, three rounds of the README shape and of 1 KiB commands.
# Usage: bench/encrypt-peers.sh (after cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release/synod
for round in 1 2 3; do
  for mode in plain enc; do
    flag=""; [ $mode = enc ] && flag="--encrypt-peers"
    echo "== readme $mode round $round"
    $B bench --local 3 --json $flag 2>/dev/null | tail -1
    echo "== 1k $mode round $round"
    $B bench --local 3 --json --size 1024 --batch 16 --inflight 32 $flag 2>/dev/null | tail -1
  done
done
