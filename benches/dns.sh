#!/usr/bin/env bash
# Names resolved for real: egressd (its own resolver), an earlier egressd
# build (EGRESSD_BASELINE, whatever resolver it has) and Squid, side by side
# in the same rounds, each asking the same dnsmasq (127.0.0.53:53, answers
# with TTL ${TTL}s, every question logged and counted). No pins. The old
# build reads /etc/resolv.conf through getaddrinfo, so it runs in a private
# mount namespace (unshare -m) with a resolv.conf naming dnsmasq bound over
# /etc/resolv.conf: the host's file is never touched.
#
#   bash benches/dns.sh                           # ROUNDS=3 DURATION=5
#   EGRESSD_BASELINE=/path/to/old/egressd bash benches/dns.sh
#   SCENARIOS="dns-1 dns-200 dns-new-200 dns-slow dns-outage" bash benches/dns.sh
#
# Scenarios: keep-alive over 1 name and over 200 names, a new connection
# per request over 200 names, a resolver that answers 100 ms late (a relay
# in front of dnsmasq), and a 20 s resolver outage (dnsmasq stopped) in the
# middle of a 30 s run with a 5 s TTL. Prints a table; everything stays on
# 127.0.0.1 and every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONC=${CONC:-50}
TTL=${TTL:-60}
SCENARIOS=${SCENARIOS:-"dns-1 dns-200 dns-new-200 dns-slow dns-outage"}
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
BASELINE=${EGRESSD_BASELINE:-}
O_HTTP=18180 P_NEW=13228 P_BASE=13229 P_SQUID=13230 DNS_IP=127.0.0.53 SLOW_IP=127.0.0.54
TARGETS="egressd ${BASELINE:+egressd-base} squid"

need=()
for t in squid nginx wrk dnsmasq python3; do command -v $t >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  pk=(); for t in "${need[@]}"; do case $t in dnsmasq) pk+=(dnsmasq-base);; squid) pk+=(squid-openssl);; *) pk+=("$t");; esac; done
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pk[@]}" >/dev/null
  for s in squid nginx; do service "$s" stop >/dev/null 2>&1 || true; done
fi
cargo build --release --quiet --bin egressd
EGRESSD=target/release/egressd

work=$(mktemp -d /tmp/egressd-dns.XXXXXX)
chmod 777 "$work"
pids=()
cleanup() {
  [ -n "${DNSMASQ_PID:-}" ] && kill -CONT "$DNSMASQ_PID" 2>/dev/null || true
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  pkill -f "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 did not open" >&2; return 1; }

# === the origin: nginx, one worker, a short answer ===
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$O_HTTP reuseport; location / { return 200 "ok\n"; } }
}
EOF
nginx -p "$work" -c "$work/nginx.conf" -e "$work/nginx-error.log" -g 'daemon off;' &
pids+=($!)

# === DNS: dnsmasq with 200 names (and origin.test) on 127.0.0.1 ===
{ echo "127.0.0.1 origin.test"; for i in $(seq 0 199); do echo "127.0.0.1 n$i.test"; done; } > "$work/hosts"
start_dnsmasq() { # ttl
  dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null --listen-address=$DNS_IP \
    --bind-interfaces --port=53 --pid-file= --user=root --group=root --local=/test/ --log-queries \
    --cache-size=1000 --local-ttl="$1" --addn-hosts="$work/hosts" --log-facility="$work/dnsmasq.log" &
  DNSMASQ_PID=$!
  pids+=($DNSMASQ_PID)
  sleep 0.3
}
stop_dnsmasq() { kill -CONT "$DNSMASQ_PID" 2>/dev/null || true; kill "$DNSMASQ_PID"; wait "$DNSMASQ_PID" 2>/dev/null || true; }
questions() { grep -c 'query\[' "$work/dnsmasq.log" 2>/dev/null || echo 0; }
start_dnsmasq "$TTL"
# A relay that answers 100 ms late (the slow-resolver scenario).
cat > "$work/slow.py" <<EOF
import asyncio, socket
class Relay(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr):
        asyncio.get_running_loop().create_task(self.later(data, addr))
    async def later(self, data, addr):
        await asyncio.sleep(0.1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(s, data, ("$DNS_IP", 53))
        try:
            r = await asyncio.wait_for(loop.sock_recv(s, 4096), 2)
            self.t.sendto(r, addr)
        except asyncio.TimeoutError:
            pass
        s.close()
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Relay, local_addr=("$SLOW_IP", 53))
    await asyncio.Event().wait()
asyncio.run(main())
EOF
python3 "$work/slow.py" &
pids+=($!)

# === the proxies ===
cat > "$work/policy.toml" <<EOF
allow = [{ host = "*.test", ports = "any" }, { host = "origin.test", ports = "any" }, { cidr = "127.0.0.0/8", ports = "any" }]
EOF
start_proxies() { # dns-server-ip
  local ip=$1
  "$EGRESSD" run --policy "$work/policy.toml" --listen 127.0.0.1:$P_NEW --admin off --no-watch \
    --dns-server "$ip" --access-log "$work/new.log" > "$work/new.out" 2>&1 &
  NEW_PID=$!; pids+=($NEW_PID)
  if [ -n "$BASELINE" ]; then
    printf 'nameserver %s\noptions timeout:5 attempts:1\n' "$ip" > "$work/resolv-$ip.conf"
    unshare -m sh -c "mount --bind '$work/resolv-$ip.conf' /etc/resolv.conf && exec '$BASELINE' run --policy '$work/policy.toml' --listen 127.0.0.1:$P_BASE --admin off --no-watch --access-log '$work/base.log'" > "$work/base.out" 2>&1 &
    BASE_PID=$!; pids+=($BASE_PID)
  fi
  cat > "$work/squid.conf" <<EOF
http_port 127.0.0.1:$P_SQUID
workers 2
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log $work/squid-cache.log
pid_filename $work/squid.pid
coredump_dir $work
hosts_file none
dns_nameservers $ip
http_access allow all
shutdown_lifetime 0 seconds
max_filedescriptors 65536
EOF
  squid -f "$work/squid.conf" --foreground -s > "$work/squid.out" 2>&1 &
  SQUID_PID=$!; pids+=($SQUID_PID)
  wait_port $P_NEW; [ -n "$BASELINE" ] && wait_port $P_BASE; wait_port $P_SQUID
}
stop_proxies() {
  for p in $NEW_PID ${BASE_PID:-} $SQUID_PID; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in $NEW_PID ${BASE_PID:-} $SQUID_PID; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$work/squid.conf" 2>/dev/null || true
  BASE_PID=""
}
port_of() { case $1 in egressd) echo $P_NEW;; egressd-base) echo $P_BASE;; squid) echo $P_SQUID;; esac; }
pid_of() { case $1 in egressd) echo $NEW_PID;; egressd-base) echo $BASE_PID;; squid) echo $SQUID_PID;; esac; }

tree() { local p=$1 c; echo "$p"; for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree "$c"; done; }
cpu_of() { local t=0 p; for p in $(tree "$1"); do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }
threads_of() { local t=0 p; for p in $(tree "$1"); do [ -r /proc/$p/status ] && t=$((t + $(awk '/^Threads/ {print $2}' /proc/$p/status))); done; echo $t; }
HZ=$(getconf CLK_TCK)

cat > "$work/names.lua" <<'EOF'
-- Absolute-form GETs through a proxy, over NAMES names (n0.test ...).
local names = tonumber(os.getenv("NAMES"))
local port = os.getenv("ORIGIN_PORT")
local close = os.getenv("CONN_CLOSE") == "1"
request = function()
  local h = (names == 1) and "origin.test" or ("n" .. math.random(0, names - 1) .. ".test")
  local hp = h .. ":" .. port
  local headers = { Host = hp }
  if close then headers["Connection"] = "close" end
  return wrk.format("GET", "http://" .. hp .. "/", headers)
end
EOF

results=$work/results.txt
: > "$results"
run() { # scenario target names close duration -> appends a row
  local sc=$1 t=$2 names=$3 close=$4 dur=$5 pid c0 c1 q0 q1 out rps p50 p99 reqs non2xx th
  pid=$(pid_of "$t")
  c0=$(cpu_of "$pid"); q0=$(questions)
  out=$(NAMES=$names ORIGIN_PORT=$O_HTTP CONN_CLOSE=$close wrk -t1 -c"$CONC" -d"${dur}s" --timeout 10s --latency \
    -s "$work/names.lua" "http://127.0.0.1:$(port_of "$t")" 2>&1)
  c1=$(cpu_of "$pid"); q1=$(questions)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  ms() { awk -v k="$1" '$1==k {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out"; }
  p50=$(ms 50%); p99=$(ms 99%)
  th=$(threads_of "$pid")
  awk -v sc="$sc" -v t="$t" -v rps="${rps:-0}" -v n="${reqs:-0}" -v bad="${non2xx:-0}" -v d=$((c1 - c0)) -v hz="$HZ" \
      -v q=$((q1 - q0)) -v p50="${p50:-0}" -v p99="${p99:-0}" -v th="$th" 'BEGIN {
    cpu = (n > 0) ? d / hz / n * 1e6 : 0; qpr = (n > 0) ? q / n : 0; ok = (n > 0) ? 100 * (n - bad) / n : 0
    printf "%-14s %-13s %10.1f %9.1f %9.4f %8.2f %8.2f %6.1f %5d\n", sc, t, rps, cpu, qpr, p50, p99, ok, th }' >> "$results"
}

warm() { # names: one pass so every name is cached (the steady state)
  local t
  for t in $TARGETS; do
    NAMES=$1 ORIGIN_PORT=$O_HTTP wrk -t1 -c10 -d2s -s "$work/names.lua" "http://127.0.0.1:$(port_of "$t")" >/dev/null 2>&1 || true
  done
}

start_proxies $DNS_IP
if want dns-1; then
  echo "== keep-alive, one name"; warm 1
  for r in $(seq 1 "$ROUNDS"); do for t in $TARGETS; do run dns-1 "$t" 1 0 "$DURATION"; done; done
fi
if want dns-200; then
  echo "== keep-alive, 200 names"; warm 200
  for r in $(seq 1 "$ROUNDS"); do for t in $TARGETS; do run dns-200 "$t" 200 0 "$DURATION"; done; done
fi
if want dns-new-200; then
  echo "== a new connection per request, 200 names"; warm 200
  for r in $(seq 1 "$ROUNDS"); do for t in $TARGETS; do run dns-new-200 "$t" 200 1 "$DURATION"; done; done
fi
stop_proxies
if want dns-slow; then
  echo "== the resolver answers 100 ms late, keep-alive, one name"
  start_proxies $SLOW_IP; warm 1
  for r in $(seq 1 "$ROUNDS"); do for t in $TARGETS; do run dns-slow "$t" 1 0 "$DURATION"; done; done
  stop_proxies
fi
if want dns-outage; then
  echo "== a 20 s resolver outage in a 30 s run, 200 names, TTL 5 s"
  stop_dnsmasq; start_dnsmasq 5; start_proxies $DNS_IP; warm 200
  for t in $TARGETS; do
    ( sleep 5; kill -STOP "$DNSMASQ_PID"; sleep 20; kill -CONT "$DNSMASQ_PID" ) &
    outage=$!
    run dns-outage "$t" 200 0 30
    wait "$outage"
  done
  stop_proxies
fi

echo
printf "%-14s %-13s %10s %9s %9s %8s %8s %6s %5s\n" scenario target "req/s" "cpu us/rq" "dns q/req" "p50 ms" "p99 ms" "ok %" thr
sort -s -k1,1 -k2,2 "$results" | awk '
  { key = $1 " " $2; n[key]++; for (i = 3; i <= 9; i++) v[key, n[key], i] = $i; order[key] = NR }
  END {
    for (key in n) keys[order[key]] = key
    for (o = 1; o <= NR; o++) if (o in keys) {
      key = keys[o]; m = int((n[key] + 1) / 2); split(key, kk, " ")
      # median by req/s
      for (a = 1; a <= n[key]; a++) { idx[a] = a }
      for (a = 1; a <= n[key]; a++) for (b = a + 1; b <= n[key]; b++) if (v[key, idx[b], 3] < v[key, idx[a], 3]) { t = idx[a]; idx[a] = idx[b]; idx[b] = t }
      j = idx[m]
      printf "%-14s %-13s %10.1f %9.1f %9.4f %8.2f %8.2f %6.1f %5d\n", kk[1], kk[2], v[key,j,3], v[key,j,4], v[key,j,5], v[key,j,6], v[key,j,7], v[key,j,8], v[key,j,9]
    }
  }'
