#!/usr/bin/env bash
# Installs the packages of the Node xDS client (cmd/localmesh/dataplane/nodeclient:
# @grpc/grpc-js-xds and what it needs, pinned by its package-lock.json) with `npm ci`
# into a cache outside the checkout, one directory per lockfile content. Idempotent:
# an installed directory is reused; concurrent runs each install into a temporary
# directory and the first to finish wins.
#
# Prints the node_modules directory on its last line; run the client with
# NODE_PATH=<that directory> node cmd/localmesh/dataplane/nodeclient/client.js.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)/cmd/localmesh/dataplane/nodeclient"
CACHE="${HORIZON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/horizon}"

log() { echo "nodeclient: $*" >&2; }

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    log "$tool not found: install Node.js 18 or later with npm (Debian: apt-get install nodejs npm; make deps does it)"
    exit 1
  fi
done

key=$(cat "$SRC/package.json" "$SRC/package-lock.json" | sha256sum | cut -c1-16)
OUT="$CACHE/nodeclient/$key"
if [ -f "$OUT/.installed" ]; then
  echo "$OUT/node_modules"
  exit 0
fi

mkdir -p "$CACHE/nodeclient"
work=$(mktemp -d "$CACHE/nodeclient/.install.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$SRC/package.json" "$SRC/package-lock.json" "$work/"
log "npm ci @grpc/grpc-js-xds and its dependencies into $OUT (under a minute)"
# No install scripts: none of these packages needs one to work.
if ! (cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >npm.log 2>&1); then
  log "npm ci failed:"
  cat "$work/npm.log" >&2
  exit 1
fi
touch "$work/.installed"
if ! mv -T "$work" "$OUT" 2>/dev/null; then
  [ -f "$OUT/.installed" ] || { log "cannot move the install into $OUT"; exit 1; }
fi
echo "$OUT/node_modules"
