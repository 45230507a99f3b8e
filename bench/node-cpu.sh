#!/usr/bin/env bash
# CPU seconds the three nodes of a local cluster spend per million commands
# of one `synod bench` run, read from /proc (utime + stime of each node
# process, before and after the measured run; the warm-up is excluded).
#
#   [NODE_CPU_DURATION=S] bench/node-cpu.sh SYNOD_BINARY [synod bench options...]
#
# e.g. bench/node-cpu.sh target/release/synod --size 1024 --batch 16 --inflight 32
# The measured run lasts NODE_CPU_DURATION seconds (10 by default), after 2
# unmeasured ones with the same options.
# Prints one line: throughput, latency, the nodes' CPU per million commands,
# the generator's CPU, and how much of the machine's CPUs all of it used.
set -euo pipefail
bin=$1
shift
dir=$(mktemp -d)
log="${dir}/cluster.out"
"${bin}" cluster --nodes 3 --data-dir "${dir}/data" > "${log}" 2>&1 &
cluster=$!
trap 'kill "${cluster}" 2>/dev/null; wait "${cluster}" 2>/dev/null; rm -rf "${dir}"' EXIT
for _ in $(seq 100); do
  grep -q '^try: synod client --cluster' "${log}" && break
  sleep 0.1
done
addrs=$(sed -n 's/^try: synod client --cluster //p' "${log}")
[ -n "${addrs}" ] || { echo "the cluster did not come up: $(cat "${log}")" >&2; exit 1; }
nodes=$(pgrep -P "${cluster}" | tr '\n' ' ')
ticks=$(getconf CLK_TCK)
cpu_ticks() {
  local total=0 pid
  for pid in ${nodes}; do
    # Fields 14 and 15 of /proc/PID/stat, counted after the command name,
    # which may hold spaces and ends at the last ')'.
    read -r utime stime < <(sed 's/.*) //' "/proc/${pid}/stat" | awk '{print $12, $13}')
    total=$((total + utime + stime))
  done
  echo "${total}"
}
# A warm-up run (the same options, 2 s), then the measured one.
warm=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) shift 2 ;;
    --duration=*) shift ;;
    *) warm+=("$1"); shift ;;
  esac
done
set -- "${warm[@]}"
measured_s=${NODE_CPU_DURATION:-10}
"${bin}" bench --cluster "${addrs}" --duration 2 --warmup 0 "$@" > /dev/null 2>&1
before=$(cpu_ticks)
TIMEFORMAT='%U %S'
{ time "${bin}" bench --cluster "${addrs}" --duration "${measured_s}" --warmup 0 --json "$@" \
  2>/dev/null | tail -1 > "${dir}/run.json"; } 2> "${dir}/generator.time"
after=$(cpu_ticks)
python3 - "${dir}/run.json" "$((after - before))" "${ticks}" "${dir}/generator.time" "$(nproc)" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
cpu_s = int(sys.argv[2]) / int(sys.argv[3])
generator_s = sum(float(x) for x in open(sys.argv[4]).read().split())
per_million = cpu_s / run["commands"] * 1e6
lat = run["latency_us"]
available = run["seconds"] * int(sys.argv[5])
print(f"{run['commands_per_sec']:.0f} commands/s, {run['mb_per_sec']:.1f} MB/s, "
      f"p50 {lat['p50']} us, p99 {lat['p99']} us; nodes used {cpu_s:.2f} CPU-s, "
      f"{per_million:.2f} CPU-s per million commands; generator {generator_s:.2f} CPU-s; "
      f"{(cpu_s + generator_s) / available:.0%} of the {sys.argv[5]} CPUs")
PY
