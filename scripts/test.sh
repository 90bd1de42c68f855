#!/usr/bin/env bash
# The test suite: install what is missing, build with warnings as errors, run every test.
# Unit tests run in parallel; the multi-process tests (label integration) run alone, as
# they share the 2 cores with the daemons they start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
install_missing_packages "${PACKAGES[@]}" "${TEST_PACKAGES[@]}"
build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESTIMATOR_WERROR=ON
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j2
