#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The Go client (clients/go) against a real estimatord: `go vet` and `go test`, with the
# cgo paths pointing at the source header and the built library, Go's caches under the
# build directory and ESTIMATORD naming the daemon (without it `go test` fails: it never
# passes untested). Exit 77 (ctest: skipped) when Go is not installed.
# usage: go_client_test.sh <clients/go> <dir of estimator_client.h> <dir of libestimator_client.so> <estimatord> <work dir>
set -eu
if ! command -v go >/dev/null 2>&1; then
  echo "SKIP: go is not installed (Debian: apt-get install golang-go)"
  exit 77
fi
src=$1 include=$2 libdir=$3 estimatord=$4 work=$5
mkdir -p "$work"
export GOCACHE="$work/gocache" GOPATH="$work/gopath" GOTMPDIR="" GOFLAGS="" GOPROXY=off
export CGO_ENABLED=1
export CGO_CFLAGS="-g -O2 -I$include"
export CGO_LDFLAGS="-g -O2 -L$libdir -Wl,-rpath,$libdir"
export ESTIMATORD="$estimatord"
cd "$src"
go version
go vet ./...
go test -count=1 -v ./...
