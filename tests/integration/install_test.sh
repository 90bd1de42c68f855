#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `cmake --install` of the whole build into a temporary prefix, then everything run from
# there: the installed estimatord (private segment and socket) and estimator against it, a
# C and a C++ program built against the installed clients with pkg-config and with
# find_package(EstimatorClient), the Python client on the installed library (found by the
# loader through LD_LIBRARY_PATH, its documented search order), the man pages and the
# systemd unit. Also: the client component alone, the libraries' exported symbols, and the
# Python wheel's contents. Processes and segments are cleaned up, pass or fail.
# usage: install_test.sh <source dir> <build dir> <work dir> <project version>
set -eu
src=$1 build=$2 work=$3 version=$4
for tool in cc c++ pkg-config nm objdump; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIP: $tool is not installed"
    exit 77
  fi
done
consumer="$src/tests/integration/install_consumer"
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
shm="estimator-install-test-$$"
sock="$work/estimator.sock"
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    i=0
    while kill -0 "$daemon_pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$daemon_pid" 2>/dev/null || true
  fi
  rm -f "/dev/shm/$shm" "/dev/shm/$shm".* 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() { echo "FAIL: $*"; exit 1; }

echo "== cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log"
lib=$(ls "$prefix"/lib*/libestimator_client.so)
libdir=$(dirname "$lib")
for f in bin/estimatord bin/estimator \
         include/estimator/estimator_client.h \
         include/estimator/clients/cpp/estimator_client.h \
         include/estimator/clients/cpp/spawned_daemon.h \
         include/estimator/common/status.h include/estimator/common/views.h \
         share/man/man1/estimatord.1 share/man/man1/estimator.1 \
         lib/systemd/system/estimatord.service lib/sysusers.d/estimator.conf \
         etc/default/estimatord share/doc/estimator/LICENSE share/doc/estimator/NOTICE; do
  test -e "$prefix/$f" || fail "$f is not installed"
done
for f in libestimator_client.so.0 libestimator_client_cpp.so.0 \
         pkgconfig/estimator-client.pc pkgconfig/estimator-client-cpp.pc \
         cmake/EstimatorClient/EstimatorClientConfig.cmake; do
  test -e "$libdir/$f" || fail "$libdir/$f is not installed"
done
# Every header the installed headers include is installed (compiled alone, -I only there).
for h in clients/cpp/estimator_client.h clients/cpp/spawned_daemon.h; do
  echo "#include \"$h\"" | c++ -std=c++20 -fsyntax-only -x c++ -I"$prefix/include/estimator" - \
    || fail "$h does not compile from the installed headers alone"
done
unit="$prefix/lib/systemd/system/estimatord.service"
grep -q "^ExecStart=$prefix/bin/estimatord " "$unit" || fail "the unit does not run $prefix/bin/estimatord"
if command -v systemd-analyze >/dev/null 2>&1; then
  # Offline: the unit's syntax and that its ExecStart binary exists; the user need not.
  systemd-analyze verify --man=no "$unit" 2>&1 | grep -v "estimator.*user\|Failed to resolve user" \
    | tee "$work/verify.log"
  if grep -qi "error\|unknown\|invalid" "$work/verify.log"; then fail "systemd-analyze verify"; fi
else
  echo "systemd-analyze not installed: unit not verified"
fi
if command -v man >/dev/null 2>&1; then
  for page in estimatord estimator; do
    warn=$(MANWIDTH=80 man --warnings -l "$prefix/share/man/man1/$page.1" 2>&1 >/dev/null || true)
    [ -z "$warn" ] || fail "man $page: $warn"
    MANWIDTH=80 man -l "$prefix/share/man/man1/$page.1" 2>/dev/null | grep -q -- "--shm-name" \
      || fail "man $page does not document --shm-name"
  done
fi

echo "== the client component alone"
cmake --install "$build" --prefix "$work/client-only" --component estimator_client >/dev/null
test ! -e "$work/client-only/bin" || fail "the client component installs programs"
ls "$work"/client-only/lib*/libestimator_client_cpp.so.0 >/dev/null || fail "no C++ library in the client component"

echo "== exported symbols"
extra=$(nm -D --defined-only "$lib" | awk '{print $NF}' | grep -v -e '^estimator_' -e '^ESTIMATOR_CLIENT_' || true)
[ -z "$extra" ] || { echo "$extra" | head -20; fail "C library: symbols besides the C interface are exported"; }
extra=$(nm -D -C --defined-only "$libdir/libestimator_client_cpp.so" | cut -d' ' -f3- | grep -v '^estimator::client::' || true)
[ -z "$extra" ] || { echo "$extra" | head -20; fail "C++ library: symbols outside estimator::client are exported"; }
for l in "$lib" "$libdir/libestimator_client_cpp.so"; do
  soname=$(objdump -p "$l" 2>/dev/null | awk '/SONAME/ {print $2}')
  echo "soname: $soname"
  case "$soname" in lib*.so.[0-9]*) ;; *) fail "$l has no versioned SONAME" ;; esac
done

echo "== the installed estimatord and estimator"
"$prefix/bin/estimatord" --version | grep -q "$version" || fail "estimatord --version does not say $version"
"$prefix/bin/estimatord" --shm-name "$shm" --socket "$sock" --log-level warn 2>"$work/daemon.log" &
daemon_pid=$!
i=0
until "$prefix/bin/estimator" ping --shm-name "$shm" --timeout-ms 200 2>/dev/null; do
  i=$((i + 1))
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log"; fail "estimatord exited"; }
  [ $i -lt 100 ] || fail "estimatord does not answer"
  sleep 0.1
done
test -S "$sock" || fail "no Kepler socket at $sock"
out=$(printf 'bpf_cpu_time_ms,bpf_page_cache_hit\n1200,3\n80,0\n' |
  "$prefix/bin/estimator" estimate --shm-name "$shm" --csv - --source rapl-sysfs --output-type AbsPower)
echo "$out"
[ "$(echo "$out" | head -1)" = "package,core,uncore,dram" ] || fail "estimate's header"
[ "$(echo "$out" | wc -l)" -eq 3 ] || fail "estimate's rows"

echo "== C and C++ consumers with pkg-config"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cflags=$(pkg-config --cflags --libs estimator-client)
cxxflags=$(pkg-config --cflags --libs estimator-client-cpp)
echo "estimator-client: $cflags"
echo "estimator-client-cpp: $cxxflags"
# shellcheck disable=SC2086
cc -std=c99 -Wall -Wextra -Werror -o "$work/consumer_pc" "$consumer/consumer.c" $cflags -Wl,-rpath,"$libdir"
# shellcheck disable=SC2086
c++ -std=c++20 -Wall -Wextra -Werror -o "$work/consumer_cpp_pc" "$consumer/consumer.cpp" $cxxflags -Wl,-rpath,"$libdir"
out=$("$work/consumer_pc" "$prefix/bin/estimatord")
echo "$out"
case "$out" in "ok SGDRegressorTrainer_0 package core uncore dram "*) ;; *) fail "pkg-config C consumer" ;; esac
out=$("$work/consumer_cpp_pc" "$shm")
echo "$out"
[ "$out" = "ok SGDRegressorTrainer_0 package core uncore dram" ] || fail "pkg-config C++ consumer"

echo "== C and C++ consumers with find_package(EstimatorClient)"
cmake -S "$consumer" -B "$work/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" \
  -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" >/dev/null
cmake --build "$work/cmake" >/dev/null
out=$("$work/cmake/consumer" "$prefix/bin/estimatord")
echo "$out"
case "$out" in "ok SGDRegressorTrainer_0 package core uncore dram "*) ;; *) fail "find_package C consumer" ;; esac
out=$("$work/cmake/consumer_cpp" "$shm")
echo "$out"
[ "$out" = "ok SGDRegressorTrainer_0 package core uncore dram" ] || fail "find_package C++ consumer"

python=/usr/bin/python3
if [ -x "$python" ]; then
  echo "== the Python client on the installed library"
  # A copy of the package (LICENSE, a link to the root's, copied as a file), so that
  # nothing is written into the source tree.
  cp -rL "$src/clients/python" "$work/python"
  out=$(cd "$work" && LD_LIBRARY_PATH="$libdir" PYTHONPATH="$work/python" PYTHONDONTWRITEBYTECODE=1 \
    ESTIMATORD="$prefix/bin/estimatord" "$python" -c '
import sys, estimator_client as ec
print(ec.__version__)
est = ec.Client(sys.argv[1]).estimate(["bpf_cpu_time_ms", "bpf_page_cache_hit"], [[1200, 3]],
                                      source="rapl-sysfs", output_type="AbsPower")
print(est.model["name"], " ".join(est.components))
with ec.spawn_daemon() as d:
    print(len(d.client().get_power(["bpf_cpu_time_ms", "bpf_page_cache_hit"], [[1200, 3], [80, 0]])))
' "$shm")
  echo "$out"
  [ "$out" = "$(printf '%s\nSGDRegressorTrainer_0 package core uncore dram\n2' "$version")" ] \
    || fail "Python client on the installed library"

  echo "== the Python client without the library"
  err=$(cd "$work" && ESTIMATOR_CLIENT_LIBRARY="$work/missing/libestimator_client.so.0" \
    PYTHONPATH="$work/python" PYTHONDONTWRITEBYTECODE=1 "$python" -c '
import estimator_client as ec
try:
    ec.Client()
except ec.EstimatorError as e:
    print(e.code_name, e.message)
' 2>&1)
  echo "$err"
  case "$err" in "unavailable cannot load the estimator client library from "*) ;; *) fail "no clear error without the library" ;; esac
  case "$err" in *"Exception ignored"*) fail "an exception in __del__ without the library" ;; esac

  # (pip imports distutils, after which setuptools refuses to load: two checks, not one.)
  if "$python" -c "import setuptools, wheel" 2>/dev/null && "$python" -m pip --version >/dev/null 2>&1; then
    echo "== the Python wheel"
    (cd "$work/python" && "$python" -m pip wheel --quiet --no-deps --no-build-isolation --no-index \
      . -w "$work/wheel" >/dev/null 2>&1) || fail "pip wheel"
    files=$("$python" -c 'import glob, sys, zipfile
print("\n".join(sorted(zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).namelist())))' "$work/wheel")
    echo "$files"
    echo "$files" | grep -q "^estimator_client-$version.dist-info/METADATA$" || fail "the wheel's version is not $version"
    echo "$files" | grep -q "^estimator_client-$version.dist-info/LICENSE$" || fail "the wheel carries no LICENSE"
    unexpected=$(echo "$files" | grep -v -e '^estimator_client/__init__\.py$' -e '^estimator_client-[0-9.]*\.dist-info/' || true)
    [ -z "$unexpected" ] || fail "the wheel bundles $unexpected"
  else
    echo "pip, setuptools or wheel missing for /usr/bin/python3: wheel not checked"
  fi
fi

echo "== estimatord stops on SIGTERM and removes its segment"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || fail "estimatord exited with status $?"
daemon_pid=""
test ! -e "/dev/shm/$shm" || fail "the segment outlived the daemon"
echo "PASS"
