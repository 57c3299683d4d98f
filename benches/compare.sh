#!/usr/bin/env bash
# egressd beside Squid, tinyproxy and nginx as a reverse proxy (and no
# proxy at all), on loopback; egressd with its JSON access log on (written
# to a file, as production runs it) and once off (egressd-nolog).
#
#   bash benches/compare.sh                 # ROUNDS=3 DURATION=5 by default
#   ROUNDS=2 DURATION=3 bash benches/compare.sh
#   SCENARIOS="keepalive idle" bash benches/compare.sh    # a subset
#   SCENARIOS=garbage bash benches/compare.sh   # a flood of malformed requests (400s)
#   PERF="egressd-inspect" SCENARIOS=inspect bash benches/compare.sh
#       # also profiles those targets (perf, first round); top frames to benches/results/
#   SYSCALLS="egressd egressd-inspect" SCENARIOS=inspect bash benches/compare.sh
#       # system calls per request of those targets (perf stat, first round)
#   SCENARIOS="tunnel-https-page" bash benches/compare.sh  # HTTPS in tunnels, 16 KiB answers
#   SCENARIOS="inspect inspect-h2 inspect-new" bash benches/compare.sh   # TLS inspection beside Squid ssl_bump
#   SCENARIOS="chain chain-tunnel" bash benches/compare.sh   # via a parent proxy, and TLS to the proxy
#   SCENARIOS="transparent transparent-tunnel" bash benches/compare.sh   # nft-redirected, beside explicit
#   SCENARIOS=dns bash benches/compare.sh   # names resolved for real (benches/dns.sh)
#   SCENARIOS=dns-listen bash benches/compare.sh   # DNS answered by egressd, beside dnsmasq (benches/dns_listen.sh)
#   EGRESSD_BASELINE=/path/to/old/egressd bash benches/compare.sh
#       # also runs an earlier build ("egressd-base") in the same rounds, for
#       # before/after figures measured side by side
#
# Installs the peers and tools from Debian's packages if missing (squid,
# tinyproxy, nginx, wrk, openssl), builds egressd and the load generator,
# starts an nginx origin on 127.0.0.1 (plain and TLS), runs each scenario for
# direct / egressd / squid / tinyproxy in turn (A B A B, ROUNDS rounds), and
# prints medians and ratios as a table; the CSV goes to benches/results/.
# Everything it starts is stopped at exit; all traffic stays on 127.0.0.1;
# every run is bounded by DURATION seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONC=${CONC:-50}
IDLE_TUNNELS=${IDLE_TUNNELS:-5000}
BULK_MB=${BULK_MB:-256}
RATE=${RATE:-4000}
SCENARIOS=${SCENARIOS:-"keepalive newconn denied tunnel-https tunnel-https-page bulk latency idle start"}
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
# The DNS scenarios (names resolved for real by a dnsmasq, no pins: dns-1,
# dns-200, dns-new-200, dns-slow, dns-outage) have their own setup in
# benches/dns.sh; `SCENARIOS=dns` runs them all. `dns-listen` (DNS answered
# by egressd's DNS listener) is benches/dns_listen.sh.
dns_scenarios="" other="" dns_listen=""
for s in $SCENARIOS; do
  case $s in dns) dns_scenarios+=" dns-1 dns-200 dns-new-200 dns-slow dns-outage";; dns-listen) dns_listen=1;; dns-*) dns_scenarios+=" $s";; *) other+=" $s";; esac
done
if [ -n "$dns_scenarios" ]; then SCENARIOS="$dns_scenarios" bash benches/dns.sh; fi
if [ -n "$dns_listen" ]; then bash benches/dns_listen.sh; fi
[ -n "$other" ] || exit 0
SCENARIOS=$other

O_HTTP=18080 O_TLS=18443 P_EGRESSD=13128 P_SQUID=13129 P_TINY=13130 P_BASE=13131 P_INSPECT=13132 P_BUMP=13133
P_CHAIN=13134 P_TLSL=13135 P_TRANS=13136 P_NOLOG=13137 P_NGINX=13138 P_BASE_INSPECT=13139
BASELINE=${EGRESSD_BASELINE:-}
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then echo "EGRESSD_BASELINE=$BASELINE is not executable" >&2; exit 1; fi
# nginx as a reverse proxy is the reference for one well-built L7 hop; it
# cannot tunnel, so the tunnel scenarios leave it out.
TUNNEL_TARGETS="direct egressd egressd-nolog ${BASELINE:+egressd-base} squid tinyproxy"
TARGETS="direct egressd egressd-nolog ${BASELINE:+egressd-base} nginx-rp squid tinyproxy"
# Something else answering on these ports would be measured instead.
for p in $O_HTTP $O_TLS $P_EGRESSD $P_SQUID $P_TINY $P_BASE $P_INSPECT $P_BUMP $P_CHAIN $P_TLSL $P_TRANS $P_NOLOG $P_NGINX $P_BASE_INSPECT; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    echo "port 127.0.0.1:$p is in use; stop what listens there first" >&2
    exit 1
  fi
done
work=$(mktemp -d /tmp/egressd-compare.XXXXXX)
# Names this run's files in benches/results/ (the CSV, any profiles).
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p benches/results
chmod 777 "$work"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  pkill -f "$work" 2>/dev/null || true
  rm -rf "$work"
  [ "${made_run_squid:-0}" = 1 ] && rm -rf /run/squid || true
}
trap cleanup EXIT

need=()
for t in squid:squid tinyproxy:tinyproxy nginx:nginx wrk:wrk openssl:openssl; do
  command -v "${t%%:*}" >/dev/null || need+=("${t##*:}")
done
# ssl_bump needs Squid built with OpenSSL (Debian's squid-openssl, which
# replaces the GnuTLS squid and serves the plain scenarios as well).
if { want inspect || want inspect-new || want inspect-h2; } && [ ! -x /usr/lib/squid/security_file_certgen ]; then
  # It conflicts with the squid package, whose binary it carries.
  kept=(); for n in "${need[@]}"; do [ "$n" = squid ] || kept+=("$n"); done
  need=("${kept[@]}" squid-openssl)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian may start packaged services on install; this run starts its own.
  for s in squid tinyproxy nginx; do service "$s" stop >/dev/null 2>&1 || true; done
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A profiled run builds with line tables (for perf's DWARF call graphs)
# into a target directory of its own, leaving the plain build as it is.
target_dir=$PWD/target
if [ -n "${PERF:-}" ]; then
  target_dir=$PWD/target/perf
  export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=$target_dir
fi
cargo build --release --quiet --bin egressd --example loadgen
EGRESSD=$target_dir/release/egressd
LOADGEN=$target_dir/release/examples/loadgen

# === origin: nginx, plain and TLS, one worker ===
# A throwaway CA and a leaf certificate for origin.test, both private to this run.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=egressd-bench-ca \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=origin.test -keyout "$work/key.pem" -out "$work/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:origin.test\nbasicConstraints=CA:FALSE\n' > "$work/leaf.ext"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
  -extfile "$work/leaf.ext" -out "$work/cert.pem" 2>/dev/null
head -c $((BULK_MB << 20)) /dev/zero > "$work/bulk.bin"
# A web page's worth (16 KiB): answers larger than one small read, as most
# HTTPS answers are, unlike the sixty-byte API reply.
head -c 16384 /dev/zero | tr '\0' 'p' > "$work/page.txt"
printf 'ok: a small response body of some sixty bytes, like an API reply.\n' > "$work/small.txt"
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log error;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$O_HTTP reuseport backlog=4096;
    listen 127.0.0.1:$O_TLS ssl backlog=4096;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    root $work;
    location = / { try_files /small.txt =404; }
    location = /bulk { try_files /bulk.bin =404; }
    location = /page { try_files /page.txt =404; }
  }
}
EOF
nginx -p "$work" -c "$work/nginx.conf" -e "$work/nginx-error.log" -g 'daemon off;' &
pids+=($!)

# === the proxies, each with an equivalent allowlist: origin.test only ===
cat > "$work/policy.toml" <<EOF
allow = [{ host = "origin.test", ports = [$O_HTTP, $O_TLS] }]
EOF
# An egressd on the shared policy: binary, port, log name, access log on|off.
# With the log on (what production runs) the JSON access events go to a
# file: --access-log where the build has it, else its stdout (an earlier
# build), appended so that trim_logs can empty it between runs.
access_log_args() { # binary name
  if "$1" run --help | grep -q -- --access-log; then echo "--access-log $work/$2-access.log"; fi
}
start_one() {
  local level=info; [ "${4:-on}" = off ] && level=warn
  # shellcheck disable=SC2046
  EGRESSD_LOG=$level "$1" run --policy "$work/policy.toml" --listen 127.0.0.1:"$2" --admin off \
    --dns static --resolve "origin.test=127.0.0.1" --log-format json --no-watch \
    $(access_log_args "$1" "$3") --max-tunnels-per-client 100000 >> "$work/$3.log" 2>&1 &
  pids+=($!)
}
start_egressd() { start_one "$EGRESSD" $P_EGRESSD egressd; EGRESSD_PID=$!; }
start_nolog() { start_one "$EGRESSD" $P_NOLOG egressd-nolog off; NOLOG_PID=$!; }
start_base() { start_one "$BASELINE" $P_BASE egressd-base; BASE_PID=$!; }
# Access logs grow by gigabytes over a run; each measurement starts empty.
trim_logs() { local f; for f in "$work"/*-access.log "$work"/egressd*.log; do [ -f "$f" ] && : > "$f"; done; return 0; }
printf '127.0.0.1 origin.test\n' > "$work/hosts"
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
hosts_file $work/hosts
dns_nameservers 127.0.0.1
acl allowed dstdomain origin.test
acl tls_port port $O_TLS
acl CONNECT method CONNECT
http_access deny CONNECT !tls_port
http_access allow allowed
http_access deny all
shutdown_lifetime 0 seconds
max_filedescriptors 65536
EOF
cat > "$work/tinyproxy.conf" <<EOF
Port $P_TINY
Listen 127.0.0.1
Timeout 60
MaxClients 10000
LogLevel Critical
PidFile "$work/tinyproxy.pid"
Filter "$work/tiny-filter"
FilterDefaultDeny Yes
FilterURLs Off
ConnectPort $O_TLS
DisableViaHeader Yes
EOF
# tinyproxy resolves with the system resolver, so it is given the origin's
# address (a private hosts file is not an option for it); the filter allows
# only that.
printf '^127\\.0\\.0\\.1$\n' > "$work/tiny-filter"

# Squid's SMP workers talk over sockets in /run/squid.
made_run_squid=0
if [ ! -d /run/squid ]; then mkdir -p /run/squid && chown proxy:proxy /run/squid && made_run_squid=1; fi
# nginx as a reverse proxy to the same origin, two workers as egressd has
# two: what one L7 hop costs here. Access log off, as nginx is usually
# benchmarked (egressd-nolog is the like-for-like figure; egressd logs).
cat > "$work/nginx-rp.conf" <<EOF
worker_processes 2;
pid $work/nginx-rp.pid;
error_log $work/nginx-rp-error.log error;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$O_HTTP; keepalive 64; }
  server {
    listen 127.0.0.1:$P_NGINX reuseport backlog=4096;
    server_name origin.test;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$P_NGINX default_server;
    return 403;
  }
}
EOF
nginx -p "$work" -c "$work/nginx-rp.conf" -e "$work/nginx-rp-error.log" -g 'daemon off;' &
pids+=($!)
NGINX_PID=$!
start_egressd
start_nolog
[ -n "$BASELINE" ] && start_base
squid -f "$work/squid.conf" --foreground -s > "$work/squid.out" 2>&1 &
pids+=($!)
SQUID_PID=$!
tinyproxy -d -c "$work/tinyproxy.conf" > "$work/tiny.out" 2>&1 &
pids+=($!)
TINY_PID=$!

wait_port() {
  for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "port $1 did not open" >&2; return 1
}
# === TLS inspection: egressd with its CA (inspecting every tunnel), and
# Squid ssl_bump (peek at step 1, then bump), each with its own local CA ===
INSPECTING=0
if want inspect || want inspect-new || want inspect-h2; then
  INSPECTING=1
  "$EGRESSD" ca init --dir "$work/egressd-ca" > /dev/null
  cat > "$work/inspect.toml" <<EOF
inspect = "all"
allow = [{ host = "origin.test", ports = [$O_TLS] }]
EOF
  start_inspecting() { # binary port name
    "$1" run --policy "$work/inspect.toml" --listen 127.0.0.1:"$2" --admin off \
      --dns static --resolve "origin.test=127.0.0.1" --log-format json --no-watch \
      --access-log "$work/$3-access.log" \
      --ca "$work/egressd-ca" --upstream-ca "$work/ca.pem" > "$work/$3.log" 2>&1 &
    pids+=($!)
  }
  start_inspecting "$EGRESSD" $P_INSPECT egressd-inspect; INSPECT_PID=$!
  # The earlier build inspecting too, with the same CA, for before/after.
  if [ -n "$BASELINE" ]; then start_inspecting "$BASELINE" $P_BASE_INSPECT egressd-base-inspect; BASE_INSPECT_PID=$!; fi
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=squid-bump-ca \
    -keyout "$work/bump-ca.key" -out "$work/bump-ca.pem" 2>/dev/null
  chmod 644 "$work/bump-ca.key"   # a throwaway CA; squid's helpers run as proxy
  /usr/lib/squid/security_file_certgen -c -s "$work/ssl_db" -M 16MB > /dev/null
  chown -R proxy:proxy "$work/ssl_db"
  sed -e "s|^http_port .*|http_port 127.0.0.1:$P_BUMP ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=16MB tls-cert=$work/bump-ca.pem tls-key=$work/bump-ca.key|" \
      -e "s|^pid_filename .*|pid_filename $work/squid-bump.pid|" \
      -e "s|^cache_log .*|cache_log $work/squid-bump-cache.log|" "$work/squid.conf" > "$work/squid-bump.conf"
  cat >> "$work/squid-bump.conf" <<EOF
sslcrtd_program /usr/lib/squid/security_file_certgen -s $work/ssl_db -M 16MB
sslcrtd_children 8 startup=2 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$work/ca.pem
EOF
  squid -n egressdbump -f "$work/squid-bump.conf" --foreground -s > "$work/squid-bump.out" 2>&1 &
  pids+=($!)
  BUMP_PID=$!
  cat "$work/ca.pem" "$work/egressd-ca/ca.pem" "$work/bump-ca.pem" > "$work/trust.pem"
fi

# === egressd chained to a parent (the egressd above, as the corporate
# proxy would be), and egressd with a TLS listener ===
CHAINING=0
if want chain || want chain-tunnel; then
  CHAINING=1
  "$EGRESSD" run --policy "$work/policy.toml" --listen 127.0.0.1:$P_CHAIN --admin off \
    --upstream-proxy http://127.0.0.1:$P_EGRESSD --log-format json --no-watch \
    --access-log "$work/egressd-chain-access.log" \
    --max-tunnels-per-client 100000 > "$work/egressd-chain.log" 2>&1 &
  pids+=($!)
  CHAIN_PID=$!
  openssl req -newkey rsa:2048 -nodes -subj /CN=proxy.test -keyout "$work/proxy-key.pem" -out "$work/proxy.csr" 2>/dev/null
  printf 'subjectAltName=DNS:proxy.test\nbasicConstraints=CA:FALSE\n' > "$work/proxy.ext"
  openssl x509 -req -in "$work/proxy.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
    -extfile "$work/proxy.ext" -out "$work/proxy-cert.pem" 2>/dev/null
  "$EGRESSD" run --policy "$work/policy.toml" --listen-tls 127.0.0.1:$P_TLSL --admin off \
    --tls-cert "$work/proxy-cert.pem" --tls-key "$work/proxy-key.pem" \
    --access-log "$work/egressd-tls-access.log" \
    --dns static --resolve "origin.test=127.0.0.1" --log-format json --no-watch \
    --max-tunnels-per-client 100000 > "$work/egressd-tls.log" 2>&1 &
  pids+=($!)
  TLSL_PID=$!
fi

# === egressd as a transparent proxy: the origin's ports are redirected to
# it by nftables while those scenarios run (its own sockets are marked) ===
TRANSPARENT=0
if want transparent || want transparent-tunnel; then
  TRANSPARENT=1
  command -v nft >/dev/null || apt-get install -y -qq nftables >/dev/null
  "$EGRESSD" run --policy "$work/policy.toml" --listen 127.0.0.1:0 --admin off \
    --transparent 127.0.0.1:$P_TRANS --mark 1337 --access-log "$work/egressd-transparent-access.log" \
    --dns static --resolve "origin.test=127.0.0.1" --log-format json --no-watch \
    --max-tunnels-per-client 100000 > "$work/egressd-transparent.log" 2>&1 &
  pids+=($!)
  TRANS_PID=$!
fi
redirect_on() {
  printf 'table ip egressd_bench {\n chain output {\n  type nat hook output priority -100; policy accept;\n  meta mark 0x539 return\n  ip daddr 127.0.0.1 tcp dport { %s, %s } redirect to :%s\n }\n}\n' \
    "$O_HTTP" "$O_TLS" "$P_TRANS" | nft -f -
}
redirect_off() { nft delete table ip egressd_bench 2>/dev/null || true; }
trap 'redirect_off; cleanup' EXIT

for p in $O_HTTP $O_TLS $P_EGRESSD $P_NOLOG $P_NGINX $P_SQUID $P_TINY ${BASELINE:+$P_BASE}; do wait_port "$p"; done
if [ "$TRANSPARENT" = 1 ]; then wait_port $P_TRANS; fi
if [ "$CHAINING" = 1 ]; then wait_port $P_CHAIN; wait_port $P_TLSL; fi
if [ "$INSPECTING" = 1 ]; then wait_port $P_INSPECT; wait_port $P_BUMP; fi
sleep 1

# === measuring ===
# A process and its descendants (squid's workers are its children).
tree() {
  local p=$1 c
  echo "$p"
  for c in $(pgrep -P "$p" 2>/dev/null); do tree "$c"; done
}
# Sums an awk expression over a /proc file of every process in a tree.
tree_sum() { # pid file awk-program
  local total=0 p
  for p in $(tree "$1"); do
    [ -r "/proc/$p/$2" ] || continue
    total=$((total + $(awk "$3" "/proc/$p/$2")))
  done
  echo "$total"
}
# CPU clock ticks (user+sys) used so far by process trees (a chain counts
# both hops), and resident KiB of one.
cpu_of() { local t=0 p; for p in "$@"; do t=$((t + $(tree_sum "$p" stat '{print $14 + $15}'))); done; echo "$t"; }
rss_kib() { tree_sum "$1" status '/VmRSS/ {print $2}'; }
# Busy clock ticks of the whole machine (user, nice, system, irq, softirq).
machine_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
HZ=$(getconf CLK_TCK)
# Clock ticks spent per request, in µs; per GiB moved, in CPU-seconds.
us_per() { awk -v d="$1" -v hz="$HZ" -v n="$2" 'BEGIN { if (n > 0) printf "%.1f", d / hz / n * 1e6 }'; }
s_per_gib() { awk -v d="$1" -v hz="$HZ" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", d / hz / (b / 1073741824) }'; }

proxy_addr() { case $1 in nginx-rp) echo $P_NGINX;; egressd-nolog) echo $P_NOLOG;; egressd-chain) echo $P_CHAIN;; egressd-tls) echo $P_TLSL;; egressd) echo $P_EGRESSD;; egressd-base) echo $P_BASE;; egressd-inspect) echo $P_INSPECT;; egressd-base-inspect) echo $P_BASE_INSPECT;; squid) echo $P_SQUID;; squid-bump) echo $P_BUMP;; tinyproxy) echo $P_TINY;; esac; }
proxy_pid() { case $1 in nginx-rp) echo "$NGINX_PID";; egressd-nolog) echo "$NOLOG_PID";; egressd-transparent) echo "$TRANS_PID";; egressd-chain) echo "$CHAIN_PID $EGRESSD_PID";; egressd-tls) echo "$TLSL_PID";; egressd) echo "$EGRESSD_PID";; egressd-base) echo "$BASE_PID";; egressd-inspect) echo "$INSPECT_PID";; egressd-base-inspect) echo "$BASE_INSPECT_PID";; squid) echo "$SQUID_PID";; squid-bump) echo "$BUMP_PID";; tinyproxy) echo "$TINY_PID";; *) echo "";; esac; }
origin_host() { [ "$1" = tinyproxy ] && echo 127.0.0.1 || echo origin.test; }

cat > "$work/request.lua" <<'EOF'
-- Absolute-form requests through a proxy (the Host header must match the
-- target), or origin-form ones direct; optionally a new connection each time.
wrk.path = os.getenv("TARGET_URL")
wrk.headers["Host"] = os.getenv("TARGET_HOST")
if os.getenv("CONN_CLOSE") == "1" then wrk.headers["Connection"] = "close" end
EOF

csv=$work/results.csv
echo "scenario,target,round,value,unit,proxy_cpu_us_per_req,p99_ms" > "$csv"

# wrk run -> "rps p99_ms requests"
run_wrk() { # target url host close
  local target=$1 url=$2 host=$3 close=$4 out port
  if [ "$target" = direct ]; then port=$O_HTTP; url=/; else port=$(proxy_addr "$target"); fi
  out=$(TARGET_URL=$url TARGET_HOST=$host CONN_CLOSE=$close wrk -t1 -c"$CONC" -d"${DURATION}s" --latency \
    -s "$work/request.lua" "http://127.0.0.1:$port" 2>&1)
  local rps p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "${rps:-0} ${p99:-0} ${reqs:-0}"
}

record() { # scenario target round value unit cpu_per p99
  echo "$1,$2,$3,$4,$5,$6,$7" >> "$csv"
}

scenario_http() { # name close
  local name=$1 close=$2 r t
  for r in $(seq 1 "$ROUNDS"); do
    for t in $TARGETS; do
      local host url pid c0 c1 res rps p99 reqs cpu_per=""
      [ "$name" = denied ] && [ "$t" = direct ] && continue
      host=$(origin_host "$t"):$O_HTTP
      [ "$name" = denied ] && host=denied.test:$O_HTTP
      url="http://$host/"
      [ "$t" = direct ] && url="http://127.0.0.1:$O_HTTP/"
      pid=$(proxy_pid "$t")
      trim_logs
      [ -n "$pid" ] && c0=$(cpu_of "$pid")
      read -r rps p99 reqs < <(run_wrk "$t" "$url" "$host" "$close")
      if [ -n "$pid" ]; then
        c1=$(cpu_of "$pid")
        cpu_per=$(us_per $((c1 - c0)) "$reqs")
      fi
      record "$name" "$t" "$r" "$rps" req/s "$cpu_per" "$p99"
    done
  done
}

# The top frames of a profile (threads merged): by self time, and the
# proxy's own functions by inclusive time. PERF_KEEP=DIR keeps perf.data.
perf_report() { # data out
  command -v perf >/dev/null || return 0
  {
    echo "# perf record -F 499 --call-graph dwarf, $(date -u +%FT%TZ); self time, all code"
    perf report -i "$1" --no-children --sort dso,sym --percent-limit 0.6 --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -70 || true
    echo "# inclusive time, user space"
    perf report -i "$1" --children --sort sym --dsos egressd,libc.so.6 --percent-limit 2 --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -70 || true
  } > "$2"
  if [ -n "${PERF_KEEP:-}" ]; then mkdir -p "$PERF_KEEP" && cp "$1" "$PERF_KEEP/"; fi
  echo "profile: $2"
}

scenario_loadgen() { # name mode path [targets]
  local name=$1 mode=$2 r t
  for r in $(seq 1 "$ROUNDS"); do
    for t in ${4:-$TUNNEL_TARGETS}; do
      local pid c0 c1 out v cpu_per="" args=()
      pid=$(proxy_pid "$t")
      if [ "$t" = direct ] || [ "$t" = egressd-transparent ]; then
        args=(--target 127.0.0.1:$O_TLS --host origin.test)
      else
        args=(--proxy 127.0.0.1:"$(proxy_addr "$t")" --target "$(origin_host "$t")":${PORT:-$O_TLS} --host origin.test)
        [ "$t" = egressd-tls ] && args+=(--proxy-tls proxy.test)
      fi
      { [ "$t" = direct ] || [ "$t" = egressd-transparent ]; } && [ -n "${PORT:-}" ] && args=(--target 127.0.0.1:$PORT --host origin.test)
      [ "$t" = egressd-transparent ] && redirect_on
      trim_logs
      [ -n "$pid" ] && c0=$(cpu_of $pid)
      local m0 m1 perf_pid=""; m0=$(machine_busy)
      # PERF="egressd-inspect ...": profile those targets in the first round.
      if [ -n "${PERF:-}" ] && [ "$r" = 1 ] && [[ " $PERF " == *" $t "* ]] && [ -n "$pid" ]; then
        perf record -q -F 499 --call-graph dwarf,16384 -p "${pid// /,}" -o "$work/perf-$name-$t.data" -- sleep "$DURATION" 2>/dev/null &
        perf_pid=$!
      fi
      # SYSCALLS="egressd-inspect ...": system calls per request (first round).
      local sys_pid=""
      if [ -n "${SYSCALLS:-}" ] && [ "$r" = 1 ] && [[ " $SYSCALLS " == *" $t "* ]] && [ -n "$pid" ]; then
        perf stat -x, -e 'syscalls:sys_enter_*' -p "${pid// /,}" -o "$work/sys-$name-$t.csv" -- sleep "$DURATION" 2>/dev/null &
        sys_pid=$!
      fi
      out=$("$LOADGEN" "$mode" "${args[@]}" --ca "${TRUST:-$work/ca.pem}" --concurrency "$CONC" \
        --duration "$DURATION" --path "$3" | tail -1)
      if [ -n "$perf_pid" ]; then
        wait "$perf_pid" || true
        perf_report "$work/perf-$name-$t.data" "benches/results/perf-$stamp-$name-$t.txt"
      fi
      if [ -n "$sys_pid" ]; then
        wait "$sys_pid" || true
        local reqs; reqs=$(jq -r '.requests // 0' <<<"$out")
        awk -F, -v n="$reqs" -v d="$DURATION" 'BEGIN { print "# system calls per request (" n " requests in about " d " s)" }
          $1 ~ /^[0-9]+$/ && $1 > 0 && n > 0 { sub("syscalls:sys_enter_", "", $3); printf "%-24s %.3f\n", $3, $1 / n }' \
          "$work/sys-$name-$t.csv" > "benches/results/syscalls-$stamp-$name-$t.txt" || true
        echo "syscalls: benches/results/syscalls-$stamp-$name-$t.txt"
      fi
      m1=$(machine_busy)
      [ "$t" = egressd-transparent ] && redirect_off
      if [ "$mode" = bulk ]; then
        v=$(jq -r '.mbps // 0' <<<"$out")
        local bytes; bytes=$(jq -r '.bytes // 0' <<<"$out")
        if [ -n "$pid" ]; then
          c1=$(cpu_of "$pid")
          cpu_per=$(s_per_gib $((c1 - c0)) "$bytes")
        fi
        record "$name" "$t" "$r" "$v" MB/s "$cpu_per" ""
        # The whole machine (load generator, origin and proxy): a proxy can
        # save its own CPU by making its peers work harder.
        record "$name-machine" "$t" "$r" "$(s_per_gib $((m1 - m0)) "$bytes")" "CPU-s/GiB" "" ""
      else
        v=$(jq -r '.rps // 0' <<<"$out")
        local n p99; n=$(jq -r '.requests // 0' <<<"$out"); p99=$(jq -r '.p99_ms // 0' <<<"$out")
        if [ -n "$pid" ]; then
          c1=$(cpu_of $pid)
          cpu_per=$(us_per $((c1 - c0)) "$n")
        fi
        record "$name" "$t" "$r" "$v" req/s "$cpu_per" "$p99"
      fi
    done
  done
}

command -v jq >/dev/null || { apt-get install -y -qq jq >/dev/null; }

# Added latency at a fixed rate below saturation (RATE req/s over CONC
# keep-alive connections): what a request pays for the proxy when the
# machine is not simply out of CPU. latency-max shows any 40 ms (Nagle) stall.
scenario_latency() {
  local r t
  for r in $(seq 1 "$ROUNDS"); do
    for t in $TARGETS; do
      local args=() out
      if [ "$t" = direct ]; then
        args=(--target 127.0.0.1:$O_HTTP --host origin.test)
      else
        args=(--proxy 127.0.0.1:"$(proxy_addr "$t")" --target "$(origin_host "$t")":$O_HTTP --host "$(origin_host "$t")")
      fi
      out=$("$LOADGEN" http "${args[@]}" --concurrency "$CONC" --rate "$RATE" --duration "$DURATION" | tail -1)
      record latency "$t" "$r" "$(jq -r '.p50_ms // 0' <<<"$out")" "ms p50" "" "$(jq -r '.p99_ms // 0' <<<"$out")"
      record latency-max "$t" "$r" "$(jq -r '.max_ms // 0' <<<"$out")" "ms max" "" ""
    done
  done
}

want keepalive && { echo "== keep-alive HTTP, $CONC connections"; scenario_http keepalive 0; }
want newconn && { echo "== new connection per request"; scenario_http newconn 1; }
want denied && { echo "== denied requests"; scenario_http denied 0; }
# Requests that never parse (400 and the close), each on a new connection:
# what a scanner's flood costs, beside nginx's own 400.
want garbage && { echo "== malformed requests, a connection each"; PORT=$O_HTTP scenario_loadgen garbage garbage / "egressd egressd-nolog ${BASELINE:+egressd-base} nginx-rp"; }
want tunnel-https && { echo "== HTTPS inside CONNECT tunnels"; scenario_loadgen tunnel-https tunnel-https /; }
want tunnel-https-page && { echo "== HTTPS inside CONNECT tunnels, 16 KiB answers"; scenario_loadgen tunnel-https-page tunnel-https /page; }
want bulk && { echo "== CONNECT bulk transfer, ${BULK_MB} MiB"; CONC=1 scenario_loadgen bulk bulk /bulk; }
want latency && { echo "== latency at $RATE req/s, $CONC keep-alive connections"; scenario_latency; }
# Spliced egressd beside inspecting egressd and bumping Squid.
want inspect && { echo "== HTTPS keep-alive through inspected tunnels"; TRUST=$work/trust.pem scenario_loadgen inspect tunnel-https / "direct egressd egressd-inspect ${BASELINE:+egressd-base-inspect} squid-bump"; }
# HTTP/2 to the inspecting side (5 connections, 10 streams each: 50 in
# flight, as the keep-alive scenarios have); HTTP/1.1 to the origin.
# Squid speaks no HTTP/2 and nginx's origin here none either.
want inspect-h2 && { echo "== HTTP/2 inside inspected tunnels, 5 x 10 streams"; TRUST=$work/trust.pem CONC=5 scenario_loadgen inspect-h2 tunnel-h2 / "egressd-inspect ${BASELINE:+egressd-base-inspect}"; }
want inspect-new && { echo "== a new inspected tunnel per request"; TRUST=$work/trust.pem scenario_loadgen inspect-new tunnel-new / "direct egressd egressd-inspect ${BASELINE:+egressd-base-inspect} squid-bump"; }

# Through a parent (both hops' CPU counted) and over TLS to the proxy,
# beside the direct figures, with the same load generator.
want chain && { echo "== keep-alive HTTP: direct, egressd, egressd chained to a parent, TLS to egressd"; PORT=$O_HTTP scenario_loadgen chain http / "direct egressd egressd-chain egressd-tls"; }
want chain-tunnel && { echo "== HTTPS in tunnels: direct, egressd, chained, TLS to egressd"; scenario_loadgen chain-tunnel tunnel-https / "direct egressd egressd-chain egressd-tls"; }

# The same loads, the app unaware of any proxy: nftables redirects them.
want transparent && { echo "== keep-alive HTTP: direct, explicit egressd, transparent egressd"; PORT=$O_HTTP scenario_loadgen transparent http / "direct egressd egressd-transparent"; }
want transparent-tunnel && { echo "== HTTPS keep-alive: direct, in CONNECT tunnels, transparent (by SNI)"; scenario_loadgen transparent-tunnel tunnel-https / "direct egressd egressd-transparent"; }

want idle && echo "== idle tunnels and memory"
want idle && for t in egressd squid tinyproxy; do
  pid=$(proxy_pid "$t")
  before=$(rss_kib "$pid")
  "$LOADGEN" idle --proxy 127.0.0.1:"$(proxy_addr "$t")" --target "$(origin_host "$t")":$O_TLS \
    --concurrency "$IDLE_TUNNELS" --duration 4 > "$work/idle-$t.out" &
  lg=$!
  for _ in $(seq 1 600); do grep -q holding "$work/idle-$t.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  during=$(rss_kib "$pid")
  open=$(grep holding "$work/idle-$t.out" | jq -r .open 2>/dev/null || echo 0)
  wait "$lg" || true
  per=$(awk -v a="$before" -v b="$during" -v n="$open" 'BEGIN { if (n > 0) printf "%.1f", (b - a) / n }')
  record idle-tunnel "$t" 1 "$per" KiB/tunnel "" ""
  # After the load scenarios when they ran; RSS of a fresh start is below.
  record rss-after-load "$t" 1 "$before" KiB "" ""
  echo "$t: $open tunnels, RSS $before -> $during KiB"
done

want start && echo "== start to accepting (egressd)"
want start && kill "$EGRESSD_PID" && sleep 0.5
want start && for r in $(seq 1 "$ROUNDS"); do
  t0=$(date +%s%N)
  start_egressd
  for _ in $(seq 1 2000); do (exec 3<>/dev/tcp/127.0.0.1/$P_EGRESSD) 2>/dev/null && break; sleep 0.001; done
  t1=$(date +%s%N)
  record start-to-accept egressd "$r" "$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.1f", d / 1e6 }')" ms "" ""
  sleep 0.5
  record rss-idle-start egressd "$r" "$(rss_kib "$EGRESSD_PID")" KiB "" ""
  kill "$EGRESSD_PID"; sleep 0.3
done

# === report: medians and ratios ===
cp "$csv" "benches/results/compare-$stamp.csv"
python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(s, t, key="value"):
    v = [float(r[key]) for r in rows if r["scenario"] == s and r["target"] == t and r[key] not in ("", None)]
    return statistics.median(v) if v else None
print()
print(f"{'scenario':<16}{'target':<14}{'median':>12} {'unit':<11}{'x direct':>9}{'x squid':>9}{'cpu us/req':>12}{'cpu x nginx':>12}{'p99 ms':>9}")
for s in dict.fromkeys(r["scenario"] for r in rows):
    unit = next(r["unit"] for r in rows if r["scenario"] == s)
    d, sq = med(s, "direct"), med(s, "squid") or med(s, "squid-bump")
    ng = med(s, "nginx-rp", "proxy_cpu_us_per_req")
    for t in ["direct", "egressd", "egressd-nolog", "egressd-base", "nginx-rp", "egressd-inspect", "egressd-base-inspect", "egressd-chain", "egressd-tls", "egressd-transparent", "squid", "squid-bump", "tinyproxy"]:
        v = med(s, t)
        if v is None:
            continue
        rd = f"{v / d:.2f}" if d else ""
        rs = f"{v / sq:.2f}" if sq else ""
        cpu = med(s, t, "proxy_cpu_us_per_req")
        p99 = med(s, t, "p99_ms")
        rn = f"{cpu / ng:.2f}" if cpu is not None and ng else ""
        print(f"{s:<16}{t:<14}{v:>12.1f} {unit:<11}{rd:>9}{rs:>9}{(f'{cpu:.1f}' if cpu is not None else ''):>12}{rn:>12}{(f'{p99:.2f}' if p99 else ''):>9}")
PY
echo
echo "CSV: benches/results/compare-$stamp.csv (cpu column: us per request, or CPU-s per GiB for bulk)"
