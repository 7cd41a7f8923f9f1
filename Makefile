# Weft — build, generate, test.
#
# Every tool is built from the Go module proxy into bin/ (never downloaded as
# a binary): controller-gen, golangci-lint and kustomize from hack/tools,
# kube-apiserver, etcd and kubectl from hack/envtest.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

ROOT := $(shell pwd)
BIN := $(ROOT)/bin
export GOTOOLCHAIN := local
export GOFLAGS := -buildvcs=false

CONTROLLER_GEN := $(BIN)/controller-gen
GOLANGCI_LINT := $(BIN)/golangci-lint
KUSTOMIZE := $(BIN)/kustomize
TOOLS_SUM := hack/tools/go.sum

GO_TEST_FLAGS ?= -count=1 -timeout 25m
PKGS ?= ./...

.PHONY: all
all: build

##@ Tools

$(CONTROLLER_GEN): $(TOOLS_SUM)
	cd hack/tools && go build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(GOLANGCI_LINT): $(TOOLS_SUM)
	cd hack/tools && go build -o $@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

$(KUSTOMIZE): $(TOOLS_SUM)
	cd hack/tools && go build -o $@ sigs.k8s.io/kustomize/kustomize/v5

.PHONY: envtest
envtest: ## Build kube-apiserver, etcd and kubectl (first time: ~10 minutes).
	@hack/envtest/build.sh >/dev/null

# KUBEBUILDER_ASSETS is where envtest finds kube-apiserver and etcd.
ENVTEST_ASSETS = $(shell hack/envtest/build.sh)

##@ Generate

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Deepcopy code.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) $(KUSTOMIZE) ## CRDs (Weft's, and SMI's optional TrafficSplit in config/smi), RBAC, webhook configuration, Argo CD's health checks (config/argocd) and the Helm chart's generated part (charts/weft).
	$(CONTROLLER_GEN) rbac:roleName=weft-controller webhook paths=./... \
		output:rbac:artifacts:config=config/rbac output:webhook:artifacts:config=config/webhook
	$(CONTROLLER_GEN) crd paths=./api/v1alpha1/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) crd paths=./api/smi/... output:crd:artifacts:config=config/smi
	go run ./hack/argocd-health config/argocd
	{ $(KUSTOMIZE) build config/default; echo ---; $(KUSTOMIZE) build config/webhook-certificate; } | go run ./hack/helm-chart charts/weft config/smi/split.smi-spec.io_trafficsplits.yaml

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) $(KUSTOMIZE) ## Fail when generated files differ from what generate+manifests make.
	hack/verify-generated.sh

##@ Build and test

.PHONY: build
build: ## Build the controller, the init binary and the kubectl plugin (bin/kubectl-weft).
	go build -o $(BIN)/weft-controller ./cmd/weft-controller
	go build -o $(BIN)/weft-init ./cmd/weft-init
	go build -o $(BIN)/kubectl-weft ./cmd/kubectl-weft

.PHONY: vet
vet:
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint with .golangci.yml, on Weft and on the e2e/canary, e2e/promql, e2e/helm and bench modules.
	$(GOLANGCI_LINT) run ./...
	hack/flagger-src.sh >/dev/null
	cd e2e/canary && $(GOLANGCI_LINT) run ./...
	cd e2e/promql && $(GOLANGCI_LINT) run ./...
	cd e2e/helm && $(GOLANGCI_LINT) run ./...
	cd bench && $(GOLANGCI_LINT) run ./...

.PHONY: test
test: verify-generated vet envtest ## Everything CI runs: generated-file check, vet, unit, envtest and e2e tests, the canary tools' suite, the metric templates and the Helm chart.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test $(GO_TEST_FLAGS) $(PKGS)
	$(MAKE) test-canary test-promql test-helm

# e2e/helm is a module of its own (Helm's SDK and its dependencies).
.PHONY: test-helm
test-helm: envtest $(KUSTOMIZE) ## The Helm chart: helm lint, its defaults against config/default, and installs into a real API server.
	cd e2e/helm && go vet ./... && KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test $(GO_TEST_FLAGS) ./...

.PHONY: helm-package
helm-package: ## Write the chart archive dist/weft-<version>.tgz with Helm's own packager.
	cd e2e/helm && go run ./cmd/helm-package $(ROOT)/charts/weft $(ROOT)/dist

# e2e/promql is a module of its own too (Prometheus's dependencies).
.PHONY: test-promql
test-promql: ## The canary metric templates (config/canary) evaluated by Prometheus's PromQL engine.
	cd e2e/promql && go vet ./... && go test $(GO_TEST_FLAGS) ./...

# e2e/canary is a module of its own (the canary tools' dependencies stay out
# of Weft's go.mod); Flagger's module is prepared by hack/flagger-src.sh.
.PHONY: test-canary
test-canary: envtest ## The canary tools' own code (Argo Rollouts, Flagger) driving the weft-controller binary (first build: a few minutes).
	hack/flagger-src.sh >/dev/null
	go build -o $(BIN)/weft-controller ./cmd/weft-controller
	cd e2e/canary && go vet ./... && WEFT_CONTROLLER_BINARY=$(BIN)/weft-controller KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test $(GO_TEST_FLAGS) -v ./... 2>&1 | grep -v '^time=.*level=info'

.PHONY: test-e2e
test-e2e: envtest ## Only the end-to-end suite: real gRPC xDS traffic through the weft-controller binary (about a minute).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test $(GO_TEST_FLAGS) -v ./e2e/...

.PHONY: bench
bench: envtest bench-istiod ## Benchmarks recorded in docs/benchmarks.md, and the side-by-side run with istiod.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test -run '^$$' -bench . -benchmem -timeout 60m ./...

# bench/ is a module of its own (istio.io/istio and its dependencies);
# building pilot-discovery takes about four minutes the first time.
# WEFT_BENCH_SERVICES (default 500) and WEFT_BENCH_CHANGES (default 50) size it.
.PHONY: bench-istiod
bench-istiod: envtest ## Weft and istiod side by side: same API server, mesh and simulated proxies (builds pilot-discovery).
	cd bench && go vet ./... && KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test -run '^$$' -bench BenchmarkSideBySide -benchtime=1x -timeout 60m ./...

##@ Run

# Flags for the demo, e.g. DEMO_ARGS="--duration=2m --steps=95/5,75/25,0/100".
DEMO_ARGS ?=

.PHONY: demo
demo: ## Weft on this machine without a cluster: API server, controller, gRPC workloads and a live canary (Ctrl-C stops it).
	@echo "==> kube-apiserver, etcd and kubectl (built from the Go module proxy the first time: about 10 minutes)"
	@hack/envtest/build.sh >/dev/null
	@echo "==> building weft-controller, weft-demo and kubectl-weft"
	@go build -o $(BIN)/weft-controller ./cmd/weft-controller
	@go build -o $(BIN)/weft-demo ./hack/demo
	@go build -o $(BIN)/kubectl-weft ./cmd/kubectl-weft
	@echo "==> starting the demo"
	@KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" $(BIN)/weft-demo --repo-root=$(ROOT) --controller-binary=$(BIN)/weft-controller $(DEMO_ARGS)

.PHONY: run
run: ## Run the controller against the cluster in $$KUBECONFIG (RUN_ARGS=... adds flags; see --help).
	go run ./cmd/weft-controller $(RUN_ARGS)


##@ Deploy

# The controller image the installer deploys; PROXY_IMG and INIT_IMG, when
# set, override the injected sidecar and init images (by default the
# controller injects the images of its own version).
IMG ?= ghcr.io/weft-mesh/weft-controller:dev
PROXY_IMG ?=
INIT_IMG ?=
# kubectl from PATH, else the one hack/envtest builds.
KUBECTL ?= $(or $(shell command -v kubectl 2>/dev/null),$(ENVTEST_ASSETS)/kubectl)

# Renders config/default with the images above to stdout. kustomize only
# loads bases by relative path, so the throwaway overlay lives under dist/.
define render-installer
mkdir -p $(ROOT)/dist; \
overlay="$$(mktemp -d $(ROOT)/dist/.overlay.XXXXXX)"; \
trap 'rm -rf "$$overlay"' EXIT; \
cd "$$overlay"; \
$(KUSTOMIZE) create --resources ../../config/default; \
$(KUSTOMIZE) edit set image ghcr.io/weft-mesh/weft-controller=$(IMG); \
for flag in "--proxy-image=$(PROXY_IMG)" "--init-image=$(INIT_IMG)"; do \
	if [[ "$${flag#*=}" != "" ]]; then \
		$(KUSTOMIZE) edit add patch --kind Deployment --name weft-controller \
			--patch "[{\"op\":\"add\",\"path\":\"/spec/template/spec/containers/0/args/-\",\"value\":\"$${flag}\"}]"; \
	fi; \
done; \
$(KUSTOMIZE) build .
endef

.PHONY: build-installer
build-installer: $(KUSTOMIZE) ## Write dist/install.yaml: CRDs, control plane and its certificates (IMG=...).
	@$(render-installer) > $(ROOT)/dist/install.yaml.tmp
	@mv $(ROOT)/dist/install.yaml.tmp $(ROOT)/dist/install.yaml
	@echo "wrote dist/install.yaml (controller image $(IMG))"

.PHONY: deploy
deploy: $(KUSTOMIZE) ## Install Weft into the current kubectl context (needs cert-manager; IMG=...).
	@$(render-installer) | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove Weft, including its CRDs and every mesh policy object.
	@$(render-installer) | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: help
help:
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "%-18s %s\n", $$1, $$2}'
