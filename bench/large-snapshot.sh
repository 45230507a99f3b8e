#!/bin/bash
# A state above one 64 MiB frame: three local `synod node`s (fsync on,
# default snapshot policy) are filled with MIB MiB of KV values (60 KiB
# each, distinct keys), then one follower's data directory is deleted and
# it rebuilds with --rejoin while the others stay up, under a light open
# load (2,000 commands/s, Poisson) that starts 3 s before the rebuild.
# Prints what each node's snapshot file and WAL hold after the fill, the
# rebuild's time, the rebuilding node's and the leader's peak RSS, and the
# light load's latency over the 8 s it runs.
# Usage: bench/large-snapshot.sh BINARY [MIB]
set -euo pipefail
bin=$(realpath "$1") mib=${2:-96}
dir=$(mktemp -d /tmp/large-snapshot.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
peers="1=127.0.0.1:$base,2=127.0.0.1:$((base + 1)),3=127.0.0.1:$((base + 2))"
cluster="127.0.0.1:$((base + 10)),127.0.0.1:$((base + 11)),127.0.0.1:$((base + 12))"
"$bin" secret generate "$dir/secret" > /dev/null

start() { # id [extra flags]
  local id=$1
  shift
  "$bin" node --id "$id" --listen "127.0.0.1:$((base + id - 1))" \
    --client-listen "127.0.0.1:$((base + 9 + id))" --peers "$peers" \
    --data-dir "$dir/n$id" --secret-file "$dir/secret" \
    --metrics "127.0.0.1:$((base + 19 + id))" "$@" 2> "$dir/n$id.log" &
  pids[id]=$!
}
metric() { # id name: the node's value of a group-0 gauge
  curl -s "127.0.0.1:$((base + 19 + $1))/metrics" |
    awk -v name="$2" '$1 ~ "^"name"\\{" && /group="0"/ { print $2; exit }'
}
hwm_kib() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }

for id in 1 2 3; do start "$id"; done
for _ in $(seq 100); do
  "$bin" status --cluster "$cluster" > /dev/null 2>&1 && break
  sleep 0.2
done

value=$(head -c $((60 << 10)) /dev/zero | tr '\0' 'v')
started=$(date +%s.%N)
for i in $(seq $((mib * 1024 / 60))); do
  echo "put k$i $value"
done | "$bin" client --cluster "$cluster" > /dev/null
filled=$(date +%s.%N)
leader=$("$bin" status --cluster "$cluster" --json | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["nodes"][0]["leader"])')
commit=$(metric "$leader" synod_commit_index)
echo "filled ${mib} MiB in $(echo "$filled - $started" | bc) s; leader n$leader, commit slot $commit"

# The snapshot policy takes one every 64 MiB of applied commands: wait
# for the files (paced writes) and say what each node holds.
sleep 30
for id in 1 2 3; do
  snap=$(find "$dir/n$id" -name '*.snapshot' -printf '%s\n' | sort -n | tail -1)
  wal=$(du -sm --exclude='*.snapshot' "$dir/n$id" | cut -f1)
  refused=$(grep -c "cannot encode a snapshot" "$dir/n$id.log" || true)
  echo "n$id: snapshot ${snap:-none} bytes, data dir without it ${wal} MiB, encoding refusals $refused"
done

"$bin" bench --cluster "$cluster" --rate 2000 --poisson --duration 8 --warmup 1 --json \
  > "$dir/load.json" 2> /dev/null &
load=$!
sleep 3
follower=$(( leader % 3 + 1 ))
kill "${pids[follower]}"
wait "${pids[follower]}" 2>/dev/null || true
rm -rf "$dir/n$follower"
rebuild_started=$(date +%s.%N)
start "$follower" --rejoin
until [ "$(metric "$follower" synod_applied_index 2>/dev/null || echo 0)" -ge "$commit" ] 2>/dev/null; do
  sleep 0.1
done
rebuilt=$(date +%s.%N)
echo "n$follower rebuilt to slot $commit in $(echo "$rebuilt - $rebuild_started" | bc) s;" \
  "peak RSS $(( $(hwm_kib "${pids[follower]}") / 1024 )) MiB;" \
  "leader n$leader peak RSS $(( $(hwm_kib "${pids[leader]}") / 1024 )) MiB;" \
  "snapshots installed: $(grep -c 'installed a snapshot' "$dir/n$follower.log" || true)"
wait "$load"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); l=d["latency_us"]; print("light load during the rebuild: %d commands/s, p50 %d µs, p99 %d µs, p99.9 %d µs, max %d µs" % (d["commands_per_sec"], l["p50"], l["p99"], l["p99_9"], l["max"]))' "$dir/load.json"
