#!/usr/bin/env bash
# Builds the helm command the chart tests run (helm lint, helm template), from the Go
# module proxy at a pinned version, into a cache outside the checkout, as testbin.sh
# does for the API server. The build happens in a throwaway module: helm's
# dependencies never enter the project's go.mod. Idempotent: a binary already in the
# cache is not rebuilt.
#
# Prints the path of the binary on its last line; with --path, only prints that path
# and builds nothing.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${HORIZON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/horizon}"
OUT="$CACHE/tools/helm-${HELM_VERSION}"

log() { echo "helm: $*" >&2; }

if [ "${1:-}" = "--path" ]; then
  echo "$OUT/helm"
  exit 0
fi

if [ ! -x "$OUT/helm" ]; then
  log "building helm $HELM_VERSION (a few minutes the first time on 2 cores)"
  mkdir -p "$OUT"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    go mod init horizon.local/tools-helm >/dev/null 2>&1
    GOFLAGS=-mod=mod go get "helm.sh/helm/v3@${HELM_VERSION}" >/dev/null 2>&1
    # helm prints its version from these; the module proxy's zip has no git metadata.
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
      -ldflags "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
      -o "$OUT/helm.tmp" helm.sh/helm/v3/cmd/helm
  )
  mv "$OUT/helm.tmp" "$OUT/helm"
fi
log "helm ready at $OUT/helm"
echo "$OUT/helm"
