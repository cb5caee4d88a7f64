#!/usr/bin/env bash
# Runs one fuzz target for a bounded time: ./fuzz/run.sh TARGET SECONDS
# New inputs go to a scratch copy of the committed seed corpus (fuzz/corpus/TARGET stays as
# committed); the ONNX targets also read the real exported models as a second corpus.
# Crashes land in fuzz/artifacts/TARGET/ and end the run with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target: onnx_import onnx_run npy idx cifar recipe settings profile}
seconds=${2:-600}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r "corpus/$target/." "$scratch/"
extra=()
case "$target" in
  onnx_*) extra=(../crates/secateur-onnx/tests/fixtures/real) ;;
esac
cargo +nightly fuzz run -O -a --sanitizer none "$target" "$scratch" corpus/"$target" "${extra[@]}" -- \
  -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 -max_len=2000000
