#!/bin/sh
# `cmake --install` of the C client into a temporary prefix, then a C program built against
# it twice, with pkg-config and with find_package(EstimatorClient), each run against a
# private estimatord it spawns. Also checks that the library exports only the C symbols.
# usage: c_client_install_test.sh <build dir> <install_consumer dir> <estimatord> <work dir>
set -eu
build=$1 consumer=$2 estimatord=$3 work=$4
for tool in cc pkg-config nm objdump; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIP: $tool is not installed"
    exit 77
  fi
done
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"

echo "== cmake --install (component estimator_client) into $prefix"
cmake --install "$build" --prefix "$prefix" --component estimator_client
lib=$(ls "$prefix"/lib*/libestimator_client.so)
libdir=$(dirname "$lib")
test -f "$prefix/include/estimator/estimator_client.h"

echo "== exported symbols"
extra=$(nm -D --defined-only "$lib" | awk '{print $NF}' | grep -v -e '^estimator_' -e '^ESTIMATOR_CLIENT_' || true)
if [ -n "$extra" ]; then
  echo "FAIL: symbols besides the C interface are exported:"
  echo "$extra" | head -20
  exit 1
fi
soname=$(objdump -p "$lib" 2>/dev/null | awk '/SONAME/ {print $2}')
echo "soname: $soname"
case "$soname" in libestimator_client.so.[0-9]*) ;; *) echo "FAIL: no versioned SONAME"; exit 1 ;; esac

echo "== pkg-config"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
flags=$(pkg-config --cflags --libs estimator-client)
echo "pkg-config: $flags"
# shellcheck disable=SC2086
cc -std=c99 -Wall -Wextra -Werror -o "$work/consumer_pc" "$consumer/consumer.c" $flags -Wl,-rpath,"$libdir"
out=$("$work/consumer_pc" "$estimatord")
echo "$out"
case "$out" in "ok SGDRegressorTrainer_0 package core uncore dram "*) ;; *) echo "FAIL: pkg-config consumer"; exit 1 ;; esac

echo "== find_package(EstimatorClient)"
cmake -S "$consumer" -B "$work/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" >/dev/null
cmake --build "$work/cmake"
out=$("$work/cmake/consumer" "$estimatord")
echo "$out"
case "$out" in "ok SGDRegressorTrainer_0 package core uncore dram "*) ;; *) echo "FAIL: find_package consumer"; exit 1 ;; esac
echo "PASS"
