#!/usr/bin/env bash
# Compares the WAL benches with fio on the same file system, in one run:
#   - fio 4 KiB write + fdatasync (O_DIRECT, preallocated file): p50 latency
#     vs our append_sync_64B median (one 64-byte frame = one 4 KiB block);
#   - fio 1 MiB write + fdatasync bandwidth vs our group-commit throughput.
# Targets: latency ratio <= 1.3, bandwidth ratio >= 0.8.
# Usage: bench/wal-baseline.sh [DIR]   (DIR: where files go, default /tmp)
# Needs: fio (apt-get install fio), jq, cargo.
set -euo pipefail
dir="${1:-/tmp}"
work="$(mktemp -d "$dir/wal-baseline.XXXXXX")"
trap 'rm -rf "$work"' EXIT
target="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}"

fio_run() { # name bs runtime_s
  fio --name="$1" --filename="$work/$1.fio" --size=256M --bs="$2" --rw=write \
      --direct=1 --fdatasync=1 --ioengine=psync --runtime="$3" --time_based \
      --output-format=json
}

echo "== fio (same file system: $dir)"
lat_json="$(fio_run lat4k 4k 15)"
fio_lat_ns="$(jq '.jobs[0].write.clat_ns.percentile["50.000000"] + .jobs[0].sync.lat_ns.percentile["50.000000"]' <<<"$lat_json")"
bw_json="$(fio_run bw1m 1M 15)"
fio_bw="$(jq '.jobs[0].write.bw_bytes' <<<"$bw_json")"

echo "== synod-wal criterion benches"
SYNOD_WAL_BENCH_DIR="$work" ${WAL_BENCH_CMD:-cargo bench -p synod-bench --bench wal -- --noplot} >&2
crit="$target/criterion/wal"
wal_lat_ns="$(jq '.median.point_estimate' "$crit/append_sync_64B/new/estimates.json")"
group_ns="$(jq '.median.point_estimate' "$crit/group_commit_64x16KiB/new/estimates.json")"
wal_bw="$(jq -n "64 * 16384 / ($group_ns / 1e9)")"

printf '%-44s %12s %12s %8s\n' "measure" "synod-wal" "fio" "ratio"
printf '%-44s %10.1fus %10.1fus %8.2f\n' "p50 64 B append+sync vs 4 KiB write+fdatasync" \
  "$(jq -n "$wal_lat_ns/1000")" "$(jq -n "$fio_lat_ns/1000")" "$(jq -n "$wal_lat_ns/$fio_lat_ns")"
printf '%-44s %8.1fMiB/s %8.1fMiB/s %8.2f\n' "group commit vs 1 MiB write+fdatasync bandwidth" \
  "$(jq -n "$wal_bw/1048576")" "$(jq -n "$fio_bw/1048576")" "$(jq -n "$wal_bw/$fio_bw")"
