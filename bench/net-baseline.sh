#!/usr/bin/env bash
# Compares the transport benches with iperf3 on loopback, in one run:
#   - iperf3, one TCP stream, 127.0.0.1, 10 s: receiver bandwidth;
#   - cargo bench --bench net: small_frames_16B (frames/s, target >= 2,000,000)
#     and bulk_64KiB (bandwidth, target >= 0.7 x iperf3).
# Usage: bench/net-baseline.sh     Needs: iperf3 (installed if missing), jq, cargo.
set -euo pipefail
target="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}"
port="${IPERF_PORT:-5299}"

if ! command -v iperf3 >/dev/null; then
  apt-get install -y iperf3 >&2 || { apt-get update >&2 && apt-get install -y iperf3 >&2; }
fi
command -v jq >/dev/null || apt-get install -y jq >&2

echo "== iperf3 -c 127.0.0.1 (one stream, 10 s)" >&2
iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
server=$!
sleep 0.5
iperf_json="$(iperf3 -c 127.0.0.1 -p "$port" -t 10 -J)"
wait "$server" || true
iperf_bw="$(jq '.end.sum_received.bits_per_second / 8' <<<"$iperf_json")"

echo "== synod-net criterion benches" >&2
${NET_BENCH_CMD:-cargo bench -p synod-bench --bench net -- --noplot} >&2
crit="$target/criterion/net"
small_ns="$(jq '.median.point_estimate' "$crit/small_frames_16B/new/estimates.json")"
bulk_ns="$(jq '.median.point_estimate' "$crit/bulk_64KiB/new/estimates.json")"
small_rate="$(jq -n "1e9 / $small_ns")"
bulk_bw="$(jq -n "65536 / ($bulk_ns / 1e9)")"

printf '%-40s %14s %14s %8s\n' "measure" "synod-net" "baseline" "ratio"
printf '%-40s %12.0f/s %14s %8.2f\n' "16 B frames one way vs 2,000,000/s" \
  "$small_rate" "2000000/s" "$(jq -n "$small_rate / 2000000")"
printf '%-40s %9.1f MiB/s %9.1f MiB/s %8.2f\n' "64 KiB frames vs iperf3 one stream" \
  "$(jq -n "$bulk_bw / 1048576")" "$(jq -n "$iperf_bw / 1048576")" "$(jq -n "$bulk_bw / $iperf_bw")"
