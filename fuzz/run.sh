#!/usr/bin/env bash
# Bounded fuzzing of every target (SECS each, default 60), with cargo-fuzz
# (libFuzzer) from crates.io. cargo-fuzz passes nightly-only flags; on the
# stable toolchain RUSTC_BOOTSTRAP=1 lets rustc accept them.
#
#   bash fuzz/run.sh                 # 60 s per target
#   SECS=3600 bash fuzz/run.sh matcher   # one target, longer
#
# Crashes land in fuzz/artifacts/<target>/; copy each into
# fuzz/regressions/<target>/ so `cargo test` keeps replaying it.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(policy_parse normalize matcher target client_hello h1_response)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cp -n regressions/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "== $t (${SECS}s)"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048
done
