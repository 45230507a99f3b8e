#!/usr/bin/env python3
# RSS of a one-node cluster before and after 3,000 idle client connections.
#   python3 bench/idle-flood.py SYNOD_BINARY   (run with ulimit -n 8192)
import socket, subprocess, sys, time, re, os, tempfile
binary = sys.argv[1]
d = tempfile.mkdtemp()
p = subprocess.Popen([binary, "cluster", "--nodes", "1", "--data-dir", d + "/c"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = None
for line in p.stdout:
    m = re.search(r"clients (\S+),", line)
    if m: addr = m.group(1)
    if line.startswith("try:"): break
host, port = addr.rsplit(":", 1)
time.sleep(1)
node = int(subprocess.check_output(["pgrep", "-P", str(p.pid)]).split()[0])
def rss():
    for l in open(f"/proc/{node}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
before = rss()
socks = []
for i in range(3000):
    try:
        s = socket.create_connection((host, int(port)), timeout=1); socks.append(s)
    except Exception: pass
time.sleep(2)
print(f"{binary}: RSS {before} MiB -> {rss()} MiB with {len(socks)} client connections opened (1,024 served at most)")
for s in socks: s.close()
p.terminate(); p.wait()
