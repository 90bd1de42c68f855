#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The suite's core under sanitizers: the unit tests and the reliability test (reduced:
# ESTIMATOR_RELIABILITY_SCALE) built with ASan+UBSan into build-asan/ and with TSan into
# build-tsan/. The daemon the reliability test starts is the instrumented estimatord of
# the same build, so a sanitizer report in it fails the test (non-zero exit status).
#   scripts/sanitize.sh              both
#   scripts/sanitize.sh address      ASan+UBSan only
#   scripts/sanitize.sh thread       TSan only
# About 10 minutes per build on 2 cores from scratch; rebuilds are incremental.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
install_missing_packages "${PACKAGES[@]}"

kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(address thread)
# The unit tests and the reliability test; the rest of the suite (model formats against
# Python references, the client bindings) adds build time, not coverage of shared memory.
targets=(unit_test kepler_json_test reliability_test estimatord victim_client hostile_client)

export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/tests/tsan.supp"
export ESTIMATOR_RELIABILITY_SCALE="${ESTIMATOR_RELIABILITY_SCALE:-0.2}"

status=0
passed=0
failed=0
for kind in "${kinds[@]}"; do
  case "$kind" in
    address) dir="$ROOT/build-asan" ;;
    thread) dir="$ROOT/build-tsan" ;;
    *) echo "sanitize: unknown kind '$kind' (address or thread)" >&2; exit 2 ;;
  esac
  echo "sanitize: $kind build in $dir"
  # Warnings are errors in the normal build; sanitizer instrumentation makes GCC report
  # false positives (maybe-uninitialized, stringop-overflow), so not here.
  cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESTIMATOR_WERROR=OFF \
    -DESTIMATOR_SANITIZE="$kind" -DESTIMATOR_BUILD_BENCH=OFF >/dev/null
  cmake --build "$dir" --target "${targets[@]}"
  for t in unit_test kepler_json_test reliability_test; do
    echo "sanitize: $kind: $t"
    if "$dir/tests/$t" --gtest_brief=1; then
      passed=$((passed + 1))
    else
      echo "sanitize: $kind: $t FAILED" >&2
      failed=$((failed + 1))
      status=1
    fi
  done
done
# The closing line, in the plain form CI reads: test programs that passed and failed.
echo "sanitize: $passed passed, $failed failed"
exit $status
