#!/usr/bin/env bash
# Build the Thanos v0.42.4 binary (github.com/thanos-io/thanos/cmd/thanos) from the
# Go module proxy, using the go.mod/go.sum/tools.go of the interop test module
# (tests/interop, the directory of this script; it may be run from anywhere).
#
# Usage: tests/interop/build-thanos.sh [CACHE_DIR]
#   CACHE_DIR defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/thanos-fanout/thanos-v0.42.4
#   The binary ends up at CACHE_DIR/thanos. If it is already there and
#   `CACHE_DIR/thanos --version` reports 0.42.4, nothing is rebuilt.
#
# Needs only Go (>= 1.26.0, or a Go that may fetch that toolchain from the
# module proxy) and access to the Go module proxy.
set -euo pipefail

THANOS_VERSION=0.42.4
MODULE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/thanos-fanout/thanos-v${THANOS_VERSION}}"
mkdir -p "$CACHE_DIR"
CACHE_DIR="$(cd "$CACHE_DIR" && pwd)"   # absolute: we cd to MODULE_DIR below
BIN="${CACHE_DIR}/thanos"

have_binary() {
  [[ -x "$BIN" ]] || return 1
  local out
  out="$("$BIN" --version 2>&1)" || return 1
  # e.g. "thanos, version 0.42.4 (branch: HEAD, revision: v0.42.4)"
  [[ "$out" == *"version ${THANOS_VERSION} "* ]]
}

start=$(date +%s)

if have_binary; then
  echo "thanos ${THANOS_VERSION} already built: ${BIN}"
  echo "build took 0s (cached; $(( $(date +%s) - start ))s to check)"
  exit 0
fi

command -v go >/dev/null 2>&1 || { echo "error: go not found in PATH" >&2; exit 1; }
echo "building thanos ${THANOS_VERSION} with $(go version) into ${BIN} ..."

tmp="$(mktemp "${CACHE_DIR}/.thanos.build.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

cd "$MODULE_DIR"
# Same flags as Thanos's .promu.yml (tags netgo,slicelabels; version via ldflags).
# The module proxy carries no git metadata, so Revision is the release tag.
pkg=github.com/prometheus/common/version
ldflags="-s -w \
  -X ${pkg}.Version=${THANOS_VERSION} \
  -X ${pkg}.Revision=v${THANOS_VERSION} \
  -X ${pkg}.Branch=HEAD \
  -X ${pkg}.BuildUser=$(id -un 2>/dev/null || echo unknown)@$(hostname 2>/dev/null || echo unknown) \
  -X ${pkg}.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"

# -mod=readonly: go.mod/go.sum are authoritative; nothing is rewritten.
# CGO_ENABLED=0 + netgo: a static binary, no C compiler needed.
# GOWORK=off: ignore any go.work in a parent directory of this module.
CGO_ENABLED=0 GOWORK=off go build -mod=readonly -trimpath \
  -tags netgo,slicelabels \
  -ldflags "$ldflags" \
  -o "$tmp" \
  github.com/thanos-io/thanos/cmd/thanos

chmod 0755 "$tmp"
mv -f "$tmp" "$BIN"
trap - EXIT

if ! have_binary; then
  echo "error: built ${BIN} but '--version' does not report ${THANOS_VERSION}:" >&2
  "$BIN" --version >&2 || true
  exit 1
fi

"$BIN" --version 2>&1   # kingpin prints the version on stderr
echo "build took $(( $(date +%s) - start ))s"
