# Horizon — split-horizon EDS for multi-cluster meshes.

GO        ?= go
# Build tags for every go command make runs, and through GOFLAGS for the builds that
# tests and hack/bench.sh start: vtprotobuf compiles the envoy protos' generated
# encoders, which eds/marshal.go uses. Without them (GOTAGS=) everything builds and
# works the same; only encoding resources is slower.
GOTAGS    ?= vtprotobuf
export GOFLAGS := $(strip $(GOFLAGS) -tags=$(GOTAGS))
TESTBIN   := $(shell bash hack/testbin.sh --dir)
export HORIZON_TESTBIN := $(TESTBIN)
# helm for the chart tests, built by hack/helm.sh; the tests find it here.
export HORIZON_HELM := $(shell bash hack/helm.sh --path)
GOTESTFLAGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build horizon (and the demo driver) into bin/.
	$(GO) build -o bin/ ./cmd/...

.PHONY: deps
deps: ## Install the Debian packages the tests and demo use (nginx + stream module, iproute2, util-linux, Node.js) if missing.
	@bash hack/deps.sh

.PHONY: nodeclient
nodeclient: deps ## Install the Node xDS client's npm packages (@grpc/grpc-js-xds, pinned) into the cache.
	@bash hack/nodeclient.sh >/dev/null

.PHONY: demo
demo: deps testbin build ## Run the mission on two local clusters: remote secret, meshNetworks, per-network endpoints, calls landing on v1 and v2 (KEEP=1 leaves it running).
	@bin/horizon-demo

.PHONY: testbin
testbin: helm ## Build etcd, kube-apiserver and kube-controller-manager (and helm) for tests into the cache (once per machine; ~15 min the first time).
	@GOFLAGS='$(filter-out -tags=%,$(GOFLAGS))' bash hack/testbin.sh >/dev/null

.PHONY: helm
helm: ## Build helm from the Go module proxy into the cache, for the chart tests (once per machine).
	@bash hack/helm.sh >/dev/null

.PHONY: image
image: ## Build the OCI image of horizon into bin/horizon-image.oci (an OCI layout, and bin/horizon-image.tar; reproducible, no container engine).
	$(GO) run ./cmd/horizon-image -o bin/horizon-image.oci --tarball bin/horizon-image.tar

.PHONY: test
# eds runs again without the build tags, for marshal's fallback encoder.
test: deps testbin nodeclient ## Run every test with the race detector, real API servers included.
	$(GO) test -race -count=1 -timeout 20m $(GOTESTFLAGS) ./...
	$(GO) test -race -count=1 -tags= $(GOTESTFLAGS) ./eds/

.PHONY: e2e
e2e: testbin ## Run only the end-to-end tests (real API servers).
	$(GO) test -race -count=1 -timeout 20m -v $(GOTESTFLAGS) ./e2e/...

.PHONY: bench
bench: testbin build ## Run the benchmarks and the 1,000-proxy load runs (BENCH_BIG=1: the large ones too); writes docs/bench-results.md.
	@bash hack/bench.sh

.PHONY: hostile
hostile: testbin build ## Flood a real horizon serve with hostile xDS clients while a well-behaved proxy watches (docs/load.md).
	bin/horizon-load -scenario hostile

.PHONY: lint
lint: ## Vet the code and check formatting.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed (make fmt)"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags= ./...

.PHONY: fmt
fmt: ## Format the code.
	gofmt -w $$(git ls-files '*.go')
