#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Collects a minimal root filesystem for the estimator image: the given programs (into
# /usr/local/bin), every shared library they load (found with ldd, copied to the same
# path as on this machine, symlinks resolved), the dynamic loader at the path the
# programs name, /tmp and /dev/shm (mode 1777), a non-root user in /etc/passwd and
# /etc/group, and the CA bundle when present (model downloads over https).
#
# The Dockerfile runs it in its build stage and copies the result into an empty image;
# tests run it into a temporary directory and start the programs through the collected
# loader, without docker.
#
#   deploy/collect-runtime.sh [--strip] DEST PROGRAM...
#
# Prints the collected files and their total size (the image's size, give or take the
# layer metadata). Fails when a library cannot be found.
set -euo pipefail

usage() {
  echo "usage: $0 [--strip] DEST PROGRAM..." >&2
  exit 2
}

strip_programs=0
if [ "${1:-}" = "--strip" ]; then
  strip_programs=1
  shift
fi
[ $# -ge 2 ] || usage
dest="$1"
shift

# The uid/gid the image runs as: the conventional "nonroot" id of minimal images.
readonly run_uid=65532
readonly run_gid=65532

mkdir -p "$dest/usr/local/bin" "$dest/etc" "$dest/tmp" "$dest/dev/shm"
chmod 1777 "$dest/tmp" "$dest/dev/shm"

# Copies $1 (a file or symlink) to the same absolute path under $dest, as a regular file.
copy_at_path() {
  local src="$1"
  local target="$dest$src"
  [ -e "$target" ] && return 0
  mkdir -p "$(dirname "$target")"
  cp -L "$src" "$target"
  echo "  $src"
}

declare -A seen=()
for program in "$@"; do
  [ -x "$program" ] || { echo "collect-runtime: $program is not an executable file" >&2; exit 1; }
  name="$(basename "$program")"
  install -m 0755 "$program" "$dest/usr/local/bin/$name"
  if [ "$strip_programs" -eq 1 ]; then
    strip --strip-unneeded "$dest/usr/local/bin/$name"
  fi
  echo "program $name"
  # ldd lines: "libx.so.1 => /path/libx.so.1 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
  # "linux-vdso.so.1 (0x...)" (in the kernel, nothing to copy), or "... => not found".
  if ! deps="$(ldd "$program" 2>&1)"; then
    if grep -q "not a dynamic executable" <<<"$deps"; then continue; fi
    echo "collect-runtime: ldd $program failed: $deps" >&2
    exit 1
  fi
  if grep -q "not found" <<<"$deps"; then
    echo "collect-runtime: $program needs libraries this machine lacks:" >&2
    grep "not found" <<<"$deps" >&2
    exit 1
  fi
  while read -r lib; do
    [ -n "$lib" ] || continue
    [ -z "${seen[$lib]:-}" ] || continue
    seen[$lib]=1
    copy_at_path "$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$deps")
done

# A user to run as (USER in the Dockerfile, runAsUser in Kubernetes); getpwuid() gives the
# daemon's default segment name from it.
cat >"$dest/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
estimator:x:${run_uid}:${run_gid}:estimator:/nonexistent:/sbin/nologin
EOF
cat >"$dest/etc/group" <<EOF
root:x:0:
estimator:x:${run_gid}:
EOF

if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  copy_at_path /etc/ssl/certs/ca-certificates.crt
fi

bytes="$(du -sb "$dest" | cut -f1)"
echo "collected into $dest: $((bytes / 1024 / 1024)) MiB ($bytes bytes)"
