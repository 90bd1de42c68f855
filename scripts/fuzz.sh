#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the libFuzzer targets (clang, ASan+UBSan) into build-fuzz/ and runs each one.
#   scripts/fuzz.sh           60 s per target
#   scripts/fuzz.sh --quick   the reduced run of the test suite: fixed seed, bounded runs
# Seed corpora are copies of the test fixtures (a fuzzer writes new inputs into its
# corpus folder, so never into the repository). A crash fails the script and leaves the
# reproducer (crash-*) in the working directory of that target under $OUT.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
install_missing_packages clang libclang-rt-14-dev libfuzzer-14-dev "${PACKAGES[@]}"

FUZZ_DIR="$ROOT/build-fuzz"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$FUZZ_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DESTIMATOR_FUZZ=ON -DESTIMATOR_BUILD_TESTS=OFF -DESTIMATOR_BUILD_BENCH=OFF >/dev/null
cmake --build "$FUZZ_DIR"

if [ "${1:-}" = "--quick" ]; then
  limits=(-seed=1 -runs=20000 -max_total_time=20)
else
  limits=(-max_total_time=60)
fi
OUT="$(mktemp -d)"
F="$ROOT/tests/models/fixtures"
declare -A seeds=(
  [fuzz_request_reader]=""
  [fuzz_pickle]="$F/sklearn"
  [fuzz_xgboost]="$F/xgboost"
  [fuzz_ubjson]="$F/xgboost_ubj"
  [fuzz_model_folder]=""
  [fuzz_zip]="$F/zip"
  [fuzz_kepler_json]="$ROOT/tests/fuzz/kepler_json_seeds"
)
status=0
for target in "${!seeds[@]}"; do
  mkdir -p "$OUT/$target/corpus"
  [ -n "${seeds[$target]}" ] && cp "${seeds[$target]}"/* "$OUT/$target/corpus/" 2>/dev/null || true
  if (cd "$OUT/$target" && "$FUZZ_DIR/tests/fuzz/$target" "${limits[@]}" -rss_limit_mb=2048 \
        corpus > log.txt 2>&1); then
    echo "fuzz: $target: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$OUT/$target/log.txt")"
  else
    echo "fuzz: $target FAILED; log and reproducer in $OUT/$target" >&2
    tail -n 30 "$OUT/$target/log.txt" >&2
    status=1
  fi
done
exit $status
