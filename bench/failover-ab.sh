#!/bin/bash
# Failover outages of two builds, interleaved: each round runs
# `synod bench --local 3 --failover 3 --json` with the first binary, then
# the second. Usage: bench/failover-ab.sh BEFORE AFTER [ROUNDS]
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
for round in $(seq "$rounds"); do
  for build in "$before" "$after"; do
    echo "== $build round $round"
    "$build" bench --local 3 --failover 3 --duration 12 --json 2>/dev/null
  done
done
