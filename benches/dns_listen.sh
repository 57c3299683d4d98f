#!/usr/bin/env bash
# DNS answered by egressd's DNS listener (--dns-listen), beside the
# upstream resolver answered directly and beside dnsmasq as a forwarder in
# front of it, side by side in the same rounds, with dnsperf (Debian's
# dnsperf) asking 200 names of type A over UDP. The upstream is a dnsmasq
# on 127.0.0.53 answering from a hosts file; everything stays on 127.0.0.x.
#
#   bash benches/dns_listen.sh                    # ROUNDS=3 DURATION=5
#   SCENARIOS=dns-listen bash benches/compare.sh  # the same
#
# Two cases: cached (the forwarders keep answers for their 60 s TTL) and
# uncached (TTL 0, caches off: every question goes upstream; egressd with
# --dns-min-ttl 0s --dns-stale 0s, the forwarding dnsmasq with
# --cache-size=0). egressd logs every answer (JSON, to a file), as it does
# in production; dnsmasq logs nothing. CPU per answer is the server's own
# CPU time (utime + stime from /proc) over the answers dnsperf counted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
UPSTREAM=127.0.0.53 FORWARDER=127.0.0.55 EGRESSD_DNS=127.0.0.1 EGRESSD_PORT=15053

need=()
for t in dnsmasq dnsperf; do command -v $t >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  pk=(); for t in "${need[@]}"; do case $t in dnsmasq) pk+=(dnsmasq-base);; *) pk+=("$t");; esac; done
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pk[@]}" >/dev/null
fi
cargo build --release --quiet --bin egressd
EGRESSD=target/release/egressd

work=$(mktemp -d /tmp/egressd-dnsl.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.3
  pkill -f "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for i in $(seq 0 199); do echo "127.0.0.1 n$i.test"; done > "$work/hosts"
for i in $(seq 0 199); do echo "n$i.test A"; done > "$work/queries"
printf 'allow = ["*.test"]\n' > "$work/policy.toml"

# The upstream: answers every name itself (TTL $1), logs nothing.
start_upstream() {
  dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null --listen-address=$UPSTREAM \
    --bind-interfaces --port=53 --pid-file= --user=root --group=root --local=/test/ \
    --cache-size=1000 --local-ttl="$1" --addn-hosts="$work/hosts" &
  UPSTREAM_PID=$!
  pids+=($UPSTREAM_PID)
}

# The forwarding dnsmasq: caches (CACHE entries) and asks the upstream.
start_forwarder() {
  dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null --listen-address=$FORWARDER \
    --bind-interfaces --port=53 --pid-file= --user=root --group=root --server=$UPSTREAM \
    --cache-size="$1" &
  FORWARDER_PID=$!
  pids+=($FORWARDER_PID)
}

start_egressd() {
  "$EGRESSD" run --policy "$work/policy.toml" --listen 127.0.0.1:0 --admin off --no-watch \
    --dns-listen "$EGRESSD_DNS:$EGRESSD_PORT" --dns-server "$UPSTREAM" --log-format json "$@" \
    > "$work/egressd.log" 2>&1 &
  EGRESSD_PID=$!
  pids+=($EGRESSD_PID)
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME PID ADDR PORT: one dnsperf run; prints "qps us_cpu_per_answer lost".
measure() {
  local before after out qps done lost hz
  hz=$(getconf CLK_TCK)
  # Warm: every name asked once.
  dnsperf -s "$3" -p "$4" -d "$work/queries" -n 1 -q 50 >/dev/null 2>&1 || true
  before=$(cpu_ticks "$2")
  out=$(dnsperf -s "$3" -p "$4" -d "$work/queries" -l "$DURATION" -c 8 -q 200 -t 2 2>&1)
  after=$(cpu_ticks "$2")
  qps=$(sed -n 's/^ *Queries per second: *\([0-9.]*\).*/\1/p' <<<"$out")
  done=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' <<<"$out")
  lost=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' <<<"$out")
  awk -v q="$qps" -v d="$done" -v t=$((after - before)) -v hz="$hz" -v l="$lost" \
    'BEGIN { printf "%.0f %.1f %d\n", q, (d > 0 ? t / hz * 1e6 / d : 0), l }'
}

declare -A sum_qps sum_cpu lost_total
run_case() { # case ttl forwarder_cache egressd_args...
  local c=$1 ttl=$2 cache=$3; shift 3
  start_upstream "$ttl"
  start_forwarder "$cache"
  start_egressd "$@"
  sleep 0.5
  for r in $(seq 1 "$ROUNDS"); do
    for t in upstream dnsmasq egressd; do
      case $t in
        upstream) read -r q u l < <(measure "$t" "$UPSTREAM_PID" $UPSTREAM 53) ;;
        dnsmasq) read -r q u l < <(measure "$t" "$FORWARDER_PID" $FORWARDER 53) ;;
        egressd) read -r q u l < <(measure "$t" "$EGRESSD_PID" $EGRESSD_DNS $EGRESSD_PORT) ;;
      esac
      echo "  $c round $r $t: $q answers/s, $u us CPU per answer, $l lost" >&2
      sum_qps[$c.$t]=$(( ${sum_qps[$c.$t]:-0} + q ))
      sum_cpu[$c.$t]=$(awk -v a="${sum_cpu[$c.$t]:-0}" -v b="$u" 'BEGIN { print a + b }')
      lost_total[$c.$t]=$(( ${lost_total[$c.$t]:-0} + l ))
    done
  done
  for p in $UPSTREAM_PID $FORWARDER_PID $EGRESSD_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

run_case cached 60 10000
run_case uncached 0 0 --dns-min-ttl 0s --dns-stale 0s

echo
echo "DNS answers through --dns-listen ($ROUNDS rounds of ${DURATION}s, 200 names, UDP, dnsperf -c 8 -q 200)"
printf '%-9s %-9s %12s %14s %10s %16s\n' case server answers/s "us CPU/answer" lost "vs dnsmasq (qps)"
for c in cached uncached; do
  base=$(( ${sum_qps[$c.dnsmasq]} / ROUNDS ))
  for t in upstream dnsmasq egressd; do
    q=$(( ${sum_qps[$c.$t]} / ROUNDS ))
    u=$(awk -v s="${sum_cpu[$c.$t]}" -v n="$ROUNDS" 'BEGIN { printf "%.1f", s / n }')
    ratio=$(awk -v a="$q" -v b="$base" 'BEGIN { printf "%.2fx", (b > 0 ? a / b : 0) }')
    printf '%-9s %-9s %12s %14s %10s %16s\n' "$c" "$t" "$q" "$u" "${lost_total[$c.$t]}" "$ratio"
  done
done
