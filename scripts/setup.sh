#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian 12 packages the build needs (only those missing) and builds
# everything into build/ (or $BUILD_DIR). Sourced by demo.sh and test.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

# Build dependencies (libzip's CMake package needs its three tool packages too).
PACKAGES=(
  cmake ninja-build g++ pkg-config
  libboost-dev libeigen3-dev libflatbuffers-dev flatbuffers-compiler libspdlog-dev
  nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  libhdf5-dev libzip-dev zipcmp zipmerge ziptool
  libcurl4-openssl-dev  # model fetching (service/model_fetcher.h)
  zlib1g-dev  # the PNG chart of `estimator validate` (service/cli/png_image.h)
)
# Independent references the model tests compare against (skipped when absent): Debian's
# scikit-learn, XGBoost (Python and C library), h5py and numpy.
TEST_PACKAGES=(
  python3-sklearn python3-xgboost python3-h5py python3-numpy python3-joblib
  libxgboost-dev xgboost
  python3-yaml
  golang-go  # the Go client's test (clients/go, cgo); skipped when absent
)

# Installs those of the given packages (default: the build dependencies) not installed yet.
install_missing_packages() {
  local wanted=("$@")
  [ ${#wanted[@]} -gt 0 ] || wanted=("${PACKAGES[@]}")
  local missing=()
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja "$@" >/dev/null
  cmake --build "$BUILD_DIR"
}
