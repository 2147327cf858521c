# Gatehouse: the project's verbs.
SHELL := /bin/bash
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
MODULES := gen internal authsvc policysvc registrysvc bridgesvc auditsvc ingress cmd/gatehouse tests bench examples
GO_TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: all tools generate check-generate lint test test-go test-race test-modules node-deps test-rules bench bench-quick up clean

all: test

# Pinned code-generation tools, from the tools module (outside go.work).
tools:
	cd tools && GOWORK=off GOBIN=$(BIN) go install tool

generate: tools
	buf lint
	buf generate

# CI: the committed gen/ must be what the protos generate, and buf lint must pass.
check-generate: generate
	@git diff --exit-code --stat -- gen/ || { echo "gen/ is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { echo "gen/ has untracked generated files: run 'make generate' and commit"; git status --porcelain -- gen/; exit 1; }

lint: tools
	buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	go vet $(addprefix ./,$(addsuffix /...,$(MODULES)))

# Every module also builds on its own, without the workspace.
test-modules:
	@for m in $(MODULES); do (cd $$m && GOWORK=off go build -o /dev/null ./... ) || exit 1; done

node-deps:
	bash tests/node/install.sh

# Every module's tests but the end-to-end suite, which runs once, under the race detector, in
# test-race.
test-go:
	go test $(GO_TEST_FLAGS) $(addprefix ./,$(addsuffix /...,$(filter-out tests,$(MODULES))))

# The race detector over the concurrent parts and the end-to-end suite (its gateway binary is
# built with -race too).
test-race: node-deps
	go test -race -count=1 -timeout 20m ./tests/... ./ingress/... ./bridgesvc/... ./internal/... ./auditsvc/...

# The Prometheus alerting rules, unit-tested with promtool (Debian's package prometheus,
# installed once when missing, as root: CI runs as root).
test-rules:
	@command -v promtool >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	promtool check rules deploy/prometheus/gatehouse-rules.yaml
	cd deploy/prometheus && promtool test rules *_test.yaml

test: check-generate lint test-modules test-rules test-go test-race

# tools/call against the floors, then tools/list of a large aggregated list, then what
# metrics, exported traces and each audit store cost a tools/call.
bench:
	go run ./bench/cmd/gatebench -out docs/benchmarks.md
	go run ./bench/cmd/gatebench lists -out docs/benchmarks-lists.md
	go run ./bench/cmd/gatebench observe -out docs/benchmarks-observability.md

# A smoke run of the benchmarks: every path and workload end to end, no figures worth keeping.
bench-quick:
	go run ./bench/cmd/gatebench -quick -out ""
	go run ./bench/cmd/gatebench lists -quick -out ""
	go run ./bench/cmd/gatebench observe -quick -out ""

up:
	go run ./cmd/gatehouse up --config examples/gatehouse.yaml

clean:
	rm -rf $(BIN) data
