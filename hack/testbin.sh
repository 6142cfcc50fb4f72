#!/usr/bin/env bash
# Builds the etcd, kube-apiserver and kube-controller-manager binaries the tests run,
# from the Go module proxy at pinned versions, into a cache outside the checkout.
# Idempotent: a binary already in the cache is not rebuilt.
#
# Prints the directory holding the binaries on its last line; with --dir, only prints
# that directory and builds nothing.
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
KUBE_VERSION="${KUBE_VERSION:-v1.34.1}"
CACHE="${HORIZON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/horizon}"
OUT="$CACHE/testbin/etcd-${ETCD_VERSION}_kube-${KUBE_VERSION}"

log() { echo "testbin: $*" >&2; }

if [ "${1:-}" = "--dir" ]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$OUT"

build_etcd() {
  if [ -x "$OUT/etcd" ]; then return; fi
  log "building etcd $ETCD_VERSION (under a minute)"
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    go mod init horizon.local/testbin-etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >/dev/null 2>&1
    CGO_ENABLED=0 go build -trimpath -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3
  )
  mv "$OUT/etcd.tmp" "$OUT/etcd"
}

# The kube-apiserver and kube-controller-manager come from one k8s.io/kubernetes
# module; both are built in the same throwaway module so that the second build reuses
# the first one's compiled packages.
build_kube() {
  local want=()
  [ -x "$OUT/kube-apiserver" ] || want+=(kube-apiserver)
  [ -x "$OUT/kube-controller-manager" ] || want+=(kube-controller-manager)
  [ ${#want[@]} -gt 0 ] || return 0
  log "building ${want[*]} $KUBE_VERSION (about 8 minutes each the first time on 2 cores)"
  local work staging gomod
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  # The k8s.io/kubernetes module replaces its staging modules with local paths; pin each
  # of them to the matching published version instead.
  gomod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging="v0${KUBE_VERSION#v1}"
  (
    cd "$work"
    {
      echo "module horizon.local/testbin-kube"
      echo
      echo "go 1.24"
      echo
      echo "require k8s.io/kubernetes ${KUBE_VERSION}"
      echo
      grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" |
        awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } >go.mod
    echo 'package main' >tools.go
    for bin in "${want[@]}"; do
      echo "import _ \"k8s.io/kubernetes/cmd/$bin\"" >>tools.go
    done
    GOFLAGS=-mod=mod go mod tidy >/dev/null
    for bin in "${want[@]}"; do
      CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$OUT/$bin.tmp" "k8s.io/kubernetes/cmd/$bin"
      mv "$OUT/$bin.tmp" "$OUT/$bin"
    done
  )
}

build_etcd
build_kube
log "binaries ready in $OUT"
echo "$OUT"
