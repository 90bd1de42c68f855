#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The test suite: install what is missing, build with warnings as errors, fuzz every
# parser briefly (scripts/fuzz.sh --quick), run every test.
# Unit tests run in parallel; the multi-process tests (label integration) run alone, as
# they share the 2 cores with the daemons they start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
install_missing_packages "${PACKAGES[@]}" "${TEST_PACKAGES[@]}"
build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESTIMATOR_WERROR=ON
# The reduced fuzz run (fixed seed, bounded runs); ESTIMATOR_SKIP_FUZZ=1 skips it.
if [ "${ESTIMATOR_SKIP_FUZZ:-0}" != 1 ]; then
  "$ROOT/scripts/fuzz.sh" --quick
fi
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j2
