#!/usr/bin/env bash
# Runs Horizon's benchmarks and a short load run on this machine and writes the
# results as markdown to docs/bench-results.md (the README links to it).
# The load runs: 1,000 proxies on a connection each with churn, and the Envoy shape
# (-full-mesh). BENCH_BIG=1 adds the large runs: 10 clusters × 1,000 services × 10
# endpoints (memory per endpoint; writes 100,000 pods first), 20 clusters, and
# 10,000 proxies (an hour or more on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/bench-results.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# make bench passes its build tags in GOFLAGS; run on its own, use the Makefile's
# default (GOTAGS), so the benchmarks measure the encoder the binaries use.
case " ${GOFLAGS:-} " in
*" -tags="*) ;;
*) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-tags=vtprotobuf" ;;
esac

echo "bench: BenchmarkEndpointGeneration (-cpu 1)" >&2
go test -run '^$' -bench BenchmarkEndpointGeneration -benchmem -cpu 1 -count 3 ./eds/ | tee "$tmp/eds.txt" >&2
echo "bench: BenchmarkBuiltEndpointsHeap (heap eds holds for built assignments, 2 and 10 clusters × 1,000 services × 10 endpoints)" >&2
go test -run '^$' -bench BenchmarkBuiltEndpointsHeap -benchtime 2x ./eds/ | tee "$tmp/edsheap.txt" >&2
echo "bench: BenchmarkRegistrySync10kPods (writes 10,000 pods to a real API server first)" >&2
go test -run '^$' -bench 'BenchmarkRegistrySync10kPods|BenchmarkRegistrySyncScoped' -benchmem -benchtime 3x -timeout 30m ./clusterregistry/ | tee "$tmp/registry.txt" >&2
# load NAME TITLE ARGS…: one horizon-load run, its markdown into $tmp/NAME.md and its
# title into $tmp/NAME.title; a failed run is reported, and the next one still runs.
runs=()
load() {
  local name=$1 title=$2
  shift 2
  runs+=("$name")
  echo "$title" >"$tmp/$name.title"
  echo "bench: load run: $title" >&2
  bin/horizon-load "$@" -markdown "$tmp/$name.md" >&2 || echo "bench: the load run \"$title\" reported a failure (see above)" >&2
}
load conn "1,000 proxies, one gRPC connection each (the default), 20 services each; churn 30 changes/s for 30 s" \
  -proxies 1000 -churn-rate 30 -churn-duration 30s
load envoy "Envoy shape: 1,000 proxies, one connection each, state of the world, CDS wildcard then every service's EDS (-full-mesh)" \
  -proxies 1000 -full-mesh
if [[ "${BENCH_BIG:-}" == 1 ]]; then
  load endpoints "Memory per endpoint: 10 clusters × 1,000 services × 10 endpoints (100,000 endpoints), 10 proxies (BENCH_BIG=1)" \
    -clusters 10 -services 1000 -endpoints 10 -proxies 10 -changes 1 -duration 40m
  load clusters "20 clusters × 100 services × 10 endpoints, 100 proxies (BENCH_BIG=1)" \
    -clusters 20 -services 100 -endpoints 10 -proxies 100 -duration 20m
  load proxies "10,000 proxies, one connection each (BENCH_BIG=1)" \
    -proxies 10000 -duration 10m -serve-timeout 5m -change-timeout 30s
fi

# "name  N  v unit  v unit …" lines → one markdown row per line.
table() {
  awk '/^Benchmark/ {
    row = "| " $1 " |"; for (i = 3; i < NF; i += 2) row = row " " $i " " $(i+1) " |"; print row }' "$1"
}
{
  echo "# Benchmark results"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) — $(nproc) cores, $(go version | cut -d' ' -f3),"
  echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end. Absolute times are noisy on a shared"
  echo "2-core machine; compare ratios. The targets are in the performance issue and in docs/load.md."
  echo
  echo "Where the scale issue's items are measured: discovery scope in BenchmarkRegistrySyncScoped;"
  echo "memory per endpoint in BenchmarkRegistrySync10kPods (and, with BENCH_BIG=1, 10 clusters × 1,000"
  echo "services × 10 endpoints); partial state-of-the-world EDS and change latency in the Envoy-shape run;"
  echo "one connection per proxy in every load run (BENCH_BIG=1: 10,000 proxies); many clusters with"
  echo "BENCH_BIG=1 (20 clusters, per-cluster sync, cached objects and API requests). The before/after of"
  echo "each change and what the profiles showed are in docs/load.md."
  echo
  echo "## BenchmarkEndpointGeneration (-cpu 1, build + marshal of what one proxy asks for)"
  echo
  echo "| case | results |"
  echo "| --- | --- |"
  table "$tmp/eds.txt"
  echo
  echo "Istio on such a machine: 2.87 ms (1/100), 1.45 ms (10/10), 14.4 ms (100/10), 14.0 ms (1000/1) per op."
  echo
  echo "## BenchmarkBuiltEndpointsHeap (heap eds holds for the assignments built for one sidecar group per network, per endpoint of every cluster)"
  echo
  echo "| case | results |"
  echo "| --- | --- |"
  table "$tmp/edsheap.txt"
  echo
  echo "Target with the registry (BenchmarkRegistrySync10kPods, heap-B/pod): ≤ 1.5 KB per endpoint at 10 clusters × 1,000 services × 10 endpoints."
  echo
  echo "## BenchmarkRegistrySync10kPods, BenchmarkRegistrySyncScoped (1,000 services in 10 namespaces, 10,000 pods, one cluster; scoped: every namespace, or discovery selectors selecting one)"
  echo
  echo "| benchmark | results |"
  echo "| --- | --- |"
  table "$tmp/registry.txt"
  echo
  for name in "${runs[@]}"; do
    echo
    echo "## Load run (cmd/horizon-load): $(cat "$tmp/$name.title")"
    echo
    cat "$tmp/$name.md" 2>/dev/null || echo "(no load results)"
  done
} >"$out"
echo "bench: wrote $out" >&2
