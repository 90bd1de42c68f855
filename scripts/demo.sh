#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job: install what is missing, build, then run `estimator demo`: it starts the
# daemon on the embedded default models, drives it like an exporter with simulated pods,
# and prints per-pod power and round-trip latency. Extra arguments go to the demo
# (e.g. --pods 64 --intervals 10).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
install_missing_packages
build -DCMAKE_BUILD_TYPE=Release
exec "$BUILD_DIR/service/estimator" demo "$@"
