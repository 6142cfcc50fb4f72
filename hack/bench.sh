#!/usr/bin/env bash
# Runs Horizon's benchmarks and a short load run on this machine and writes the
# results as markdown to docs/bench-results.md (the README links to it).
# BENCH_BIG=1 adds the performance issue's startup scenario: 3 clusters × 1,000
# services × 10 endpoints with 1,000 proxies (writes 30,000 pods first; minutes).
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
echo "bench: load run, 1,000 proxies" >&2
bin/horizon-load -proxies 1000 -markdown "$tmp/load.md" >&2 || echo "bench: the load run reported a failure (see above)" >&2
if [[ "${BENCH_BIG:-}" == 1 ]]; then
  echo "bench: big load run, 3 clusters × 1,000 services × 10 endpoints, 1,000 proxies (BENCH_BIG=1)" >&2
  bin/horizon-load -clusters 3 -services 1000 -endpoints 10 -proxies 1000 -duration 15m -markdown "$tmp/big.md" >&2 ||
    echo "bench: the big load run reported a failure (see above)" >&2
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
  echo "## Load run (cmd/horizon-load, 1,000 proxies)"
  echo
  cat "$tmp/load.md" 2>/dev/null || echo "(no load results)"
  if [[ "${BENCH_BIG:-}" == 1 ]]; then
    echo
    echo "## Big load run (cmd/horizon-load, 3 clusters × 1,000 services × 10 endpoints, 1,000 proxies)"
    echo
    cat "$tmp/big.md" 2>/dev/null || echo "(no load results)"
  fi
} >"$out"
echo "bench: wrote $out" >&2
