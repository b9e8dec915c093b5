# Herald. `make help` lists the targets. Versions of fetched tools live in hack/versions.env.
include hack/versions.env

SHELL := /usr/bin/env bash -o pipefail
GO ?= go
CACHE ?= $(or $(HERALD_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/herald)
# Build tools (hack/tools/go.mod), built by hack/tools.sh into a folder keyed by their versions.
TOOLS := $(CACHE)/tools/controller-gen-$(CONTROLLER_GEN_VERSION)-helm-$(HELM_VERSION)
CONTROLLER_GEN := $(TOOLS)/controller-gen
HELM := $(TOOLS)/helm
BIN := bin
FUZZTIME ?= 10s

export HERALD_CACHE := $(CACHE)

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/herald.
	$(GO) build -o $(BIN)/herald .

.PHONY: lint
lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: tools
tools: ## Build the pinned tools (controller-gen, helm) into $(TOOLS); reused when present.
	@HERALD_TOOLS=$(TOOLS) hack/tools.sh >/dev/null

.PHONY: controller-gen
controller-gen:
	@HERALD_TOOLS=$(TOOLS) hack/tools.sh controller-gen >/dev/null

.PHONY: helm
helm:
	@HERALD_TOOLS=$(TOOLS) hack/tools.sh helm >/dev/null

.PHONY: manifests
manifests: controller-gen ## CRDs (config/crd/bases) and the operator's ClusterRole (config/rbac/role.yaml) from the Go markers.
	hack/generate.sh $(CONTROLLER_GEN) manifests

.PHONY: generate
generate: controller-gen ## Deepcopy code (zz_generated.deepcopy.go) of the API types.
	hack/generate.sh $(CONTROLLER_GEN) generate

.PHONY: verify-generated
verify-generated: controller-gen ## Fail when the CRDs, role.yaml or deepcopy code are stale.
	@hack/generate.sh $(CONTROLLER_GEN) check

.PHONY: chart-crds
chart-crds: manifests ## Copy the generated CRDs and ClusterRole rules into the Helm chart (charts/herald/templates).
	hack/sync-chart-crds.sh

.PHONY: verify-chart
verify-chart: helm ## Fail when the chart is out of date with config/; helm lint it.
	@hack/sync-chart-crds.sh --check
	$(HELM) lint --strict charts/herald --kube-version $(KUBE_VERSION)

.PHONY: control-plane
control-plane: ## Build kube-apiserver, etcd, kube-controller-manager, kubectl (cached by version).
	@hack/build-control-plane.sh

.PHONY: dev
dev: ## Local cluster (control plane + pod runner, no Docker), the chart and config/samples; stays up (Ctrl-C or make dev-down).
	@HERALD_TOOLS=$(TOOLS) GO=$(GO) hack/dev.sh up

.PHONY: dev-down
dev-down: ## Stop what make dev started, leaving no process behind.
	@hack/dev.sh down

.PHONY: unit
unit: ## Go tests that need no control plane.
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e /controllers -e /test/)

.PHONY: e2e
e2e: helm ## End-to-end suite (test/e2e; `make test` runs it too): local cluster, helm install, brokers, push, crash, roll, uninstall.
	HELM=$(HELM) KUBEBUILDER_ASSETS=$$(hack/build-control-plane.sh) $(GO) test -count=1 -timeout 25m -v ./test/e2e/

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each.
	@hack/fuzz.sh $(FUZZTIME)

.PHONY: test
test: lint verify-generated helm ## Everything CI runs: lint, all tests against a real control plane, short fuzzing.
	HELM=$(HELM) KUBEBUILDER_ASSETS=$$(hack/build-control-plane.sh) $(GO) test -count=1 -timeout 30m ./...
	@hack/fuzz.sh $(FUZZTIME)

.PHONY: bench
bench: ## Store benchmarks and the publish load test against NATS JetStream; writes docs/benchmarks.md.
	@hack/bench.sh
