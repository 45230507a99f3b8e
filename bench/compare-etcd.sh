#!/usr/bin/env bash
# synod beside etcd, in one run, on this machine: a 3-member etcd cluster
# on loopback (Debian's etcd-server, installed if missing) and a local
# 3-replica synod cluster, each driven by `synod bench` with the same
# closed-loop shapes (16-byte values; 1 and 256 in flight), fsync on in
# both. Prints both and synod's ratio to etcd.
# Usage: bench/compare-etcd.sh [SECONDS]   Needs: cargo, jq, etcd-server.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
work="$(mktemp -d /tmp/synod-compare-etcd.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

for package in etcd-server jq; do
  binary="${package%-server}"
  command -v "$binary" >/dev/null || apt-get install -y "$package" >&2 \
    || { apt-get update >&2 && apt-get install -y "$package" >&2; }
done

cargo build --release --quiet --features synod-tools/etcd --bin synod
synod=target/release/synod

cluster="m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803"
endpoints=()
for i in 1 2 3; do
  etcd --name "m$i" --data-dir "$work/m$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token synod-compare \
    >"$work/etcd-$i.log" 2>&1 &
  pids+=("$!")
  endpoints+=("http://127.0.0.1:2379$i")
done
for _ in $(seq 1 100); do
  curl -sf "${endpoints[0]}/health" | grep -q '"true"' && break
  sleep 0.1
done
curl -sf "${endpoints[0]}/health" | grep -q '"true"' || { echo "etcd did not become healthy" >&2; cat "$work/etcd-1.log" >&2; exit 1; }

run() { "$synod" bench "$@" --duration "$seconds" --warmup 2 --size 16 --json; }
printf '\n%-12s %-8s %14s %10s %10s %10s\n' system inflight "commands/s" "p50 µs" "p99 µs" "max µs"
declare -A rate p50
for inflight in 1 256; do
  etcd_json="$(run --etcd "$(IFS=,; echo "${endpoints[*]}")" --inflight "$inflight")"
  synod_json="$(run --local 3 --inflight "$inflight")"
  for system in etcd synod; do
    json_var="${system}_json"
    json="${!json_var}"
    rate[$system]="$(jq '.commands_per_sec' <<<"$json")"
    p50[$system]="$(jq '.latency_us.p50' <<<"$json")"
    printf '%-12s %-8s %14.0f %10s %10s %10s\n' "$system" "$inflight" "${rate[$system]}" \
      "${p50[$system]}" "$(jq '.latency_us.p99' <<<"$json")" "$(jq '.latency_us.max' <<<"$json")"
  done
  printf '%-12s %-8s %13.1fx %9.2fx\n' "synod/etcd" "$inflight" \
    "$(jq -n "${rate[synod]} / ${rate[etcd]}")" "$(jq -n "${p50[etcd]} / ${p50[synod]}")"
done
echo "(ratios: throughput synod/etcd; p50 latency etcd/synod, so higher is better for synod)"
