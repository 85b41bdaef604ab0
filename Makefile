# postern — build, run and test targets. `make help` lists them.

GO        ?= go
BIN       := bin
# The version is the git tag (v1.2.3); between tags, git describe's
# v1.2.3-4-gabcdef012345; with no tag at all, v0.0.0-dev+<commit>.
VERSION   ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo "v0.0.0-dev+$$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)")
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILDINFO := github.com/posternhq/postern/internal/buildinfo
LDFLAGS   := -s -w -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT)
# The default test run: every package, race detector on, bounded time.
TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: help build run dev test test-short vet fmt bench bench-scale bench-search bench-micro bench-audit bench-locks bench-mcp fuzz soak clean web release release-check

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/postern
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/postern ./cmd/postern

dev: ## run postern with its embedded development defaults
	$(GO) run ./cmd/postern serve --dev

run: dev

web: ## build the web UI's player assets (asciinema-player and playwright-core from npm)
	@if command -v npm >/dev/null 2>&1; then \
	  cd players/web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs; \
	else echo "npm not found: the web UI says 'player assets not built' and the browser tests skip"; fi

test: tools web build ## run the whole test suite (needs the packages .ci/run installs)
	POSTERN_BIN=$(CURDIR)/$(BIN)/postern $(GO) test $(TEST_FLAGS) ./...

test-short: ## the quick subset: -short skips the slowest end-to-end tests
	$(GO) test -short -count=1 ./...

# The benchmark, soak and production-only (nodevidp) files compile only with
# their tags, so vet type-checks them too.
vet: ## go vet (also with the bench, soak and nodevidp tags), gofmt (third_party/ too) and go mod tidy checks
	$(GO) vet ./...
	$(GO) vet -tags bench,soak ./...
	$(GO) vet -tags nodevidp ./cmd/... ./server/...
	$(GO) mod tidy -diff
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench: build ## postern vs OpenSSH side by side; writes bench/results/latest.{md,json} (never part of `make test`)
	POSTERN_BIN=$(CURDIR)/$(BIN)/postern $(GO) test -tags bench -run '^TestCompare$$' -count 1 -timeout 30m -v ./bench

bench-locks: build ## lock-to-session-end latency across two replicas on PostgreSQL (BENCH_LOCK_ROUNDS=100)
	POSTERN_BIN=$(CURDIR)/$(BIN)/postern $(GO) test -tags bench -run '^TestBenchLockLatency$$' -count 1 -timeout 30m -v ./deploy

bench-mcp: build ## MCP run round trip against ssh -J on one short command (BENCH_MCP_ROUNDS=50)
	POSTERN_BIN=$(CURDIR)/$(BIN)/postern $(GO) test -tags bench -run '^TestBenchMCPRun$$' -count 1 -timeout 30m -v ./mcpserver

bench-scale: build ## two replicas sharing PostgreSQL and S3: new sessions/s, set-up p99 and CPU with 100/1000/5000 idle sessions held; writes bench/results/scale.{md,json}
	POSTERN_BIN=$(CURDIR)/$(BIN)/postern $(GO) test -tags bench -run '^TestScale$$' -count 1 -timeout 60m -v ./bench

bench-search: build ## search: indexing CPU against recording CPU, and query latency over 10,000 sessions (SQLite, PostgreSQL)
	POSTERN_BIN=$(CURDIR)/$(BIN)/postern $(GO) test -tags bench -run '^(TestSearchIndexCost|TestSearchQuery)$$' -count 1 -timeout 60m -v ./bench

bench-micro: ## go test micro-benchmarks with -benchmem (never part of `make test`)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./...

bench-audit: ## what audit signing costs: events/s with checkpoints every 1s/100ms/10ms vs none, signed vs unsigned seals (never part of `make test`)
	$(GO) test -run '^$$' -bench 'BenchmarkAppendCheckpointed|BenchmarkSealedSessions|BenchmarkCheckpoint$$|BenchmarkSignSeal' -benchtime 4s -count 5 ./audit

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in $$($(GO) list ./...); do \
	  list=$$($(GO) test -list '^Fuzz' $$pkg) || { echo "fuzz: $$pkg does not build"; exit 1; }; \
	  for f in $$(echo "$$list" | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
	  done; \
	done

soak: ## soak (SOAK_SESSIONS=1000 sessions for SOAK_DURATION=10m) and connection storm (SOAK_STORM=10000)
	ulimit -n 20000 2>/dev/null || true; \
	SOAK_DURATION=$${SOAK_DURATION:-10m} $(GO) test -tags soak -count=1 -v -timeout 0 \
	  -run '^(TestSoak|TestConnectionStorm)$$' ./internal/battery

clean: ## remove build outputs
	rm -rf $(BIN) $(DIST) $(DIST)-check

# --- releases ----------------------------------------------------------------
# make release builds the release into dist/: static binaries for linux/amd64
# and linux/arm64 (CGO off, -trimpath, without development mode), an SPDX SBOM
# of each (from the build information in the binary), and SHA256SUMS. The
# same commit gives the same bytes: the Go toolchain is pinned (RELEASE_GO,
# fetched and verified by the go command through the module proxy), nothing
# of the machine (paths, VCS state, time) goes into the binaries, and the
# SBOMs are dated with the commit time. make release-check builds twice and
# compares.
DIST        ?= dist
RELEASE_GO  ?= go1.26.10
RELEASE_OS_ARCH := linux/amd64 linux/arm64
SOURCE_DATE := $(shell git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)

release: web ## build dist/: static linux/amd64+arm64 binaries, SBOMs, SHA256SUMS (reproducible)
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@for osarch in $(RELEASE_OS_ARCH); do \
	  os=$${osarch%/*}; arch=$${osarch#*/}; out=$(DIST)/postern-$(VERSION)-$$os-$$arch; \
	  echo "== $$out"; \
	  GOTOOLCHAIN=$(RELEASE_GO) CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOFLAGS= \
	    $(GO) build -trimpath -buildvcs=false -tags nodevidp -ldflags '$(LDFLAGS)' -o $$out ./cmd/postern || exit 1; \
	  $(GO) run ./internal/sbom/cmd/postern-sbom -version $(VERSION) -created $(SOURCE_DATE) $$out > $$out.spdx.json || exit 1; \
	done
	@cd $(DIST) && sha256sum postern-* > SHA256SUMS && cat SHA256SUMS

release-check: ## build the release twice, each with an empty build cache, and check they are byte for byte the same
	rm -rf $(CURDIR)/$(DIST)-check && mkdir -p $(CURDIR)/$(DIST)-check
	GOCACHE=$(CURDIR)/$(DIST)-check/cache-a $(MAKE) release DIST=$(DIST)-check/a
	GOCACHE=$(CURDIR)/$(DIST)-check/cache-b $(MAKE) release DIST=$(DIST)-check/b
	cd $(DIST)-check && diff a/SHA256SUMS b/SHA256SUMS && echo "release is reproducible"

# --- test servers built from the tools/ modules (each its own go.mod, so
# their dependencies stay out of postern's). The harnesses in internal/
# find them in bin/ (or via $POSTERN_DEX / $POSTERN_VERSITYGW) and build
# them on demand with the same command if missing.
.PHONY: tools test-deps
TOOL_BUILD = CGO_ENABLED=0 GOWORK=off $(GO) build

tools: $(BIN)/dex $(BIN)/versitygw $(BIN)/helm ## build the test servers bin/dex and bin/versitygw, and bin/helm (renders deploy/helm in tests)

test-deps: tools ## alias of tools

$(BIN)/dex: tools/dex/go.mod tools/dex/go.sum
	cd tools/dex && $(TOOL_BUILD) -o $(CURDIR)/$@ github.com/dexidp/dex/cmd/dex

$(BIN)/versitygw: tools/versitygw/go.mod tools/versitygw/go.sum
	cd tools/versitygw && $(TOOL_BUILD) -o $(CURDIR)/$@ github.com/versity/versitygw/cmd/versitygw

$(BIN)/helm: tools/helm/go.mod tools/helm/go.sum
	cd tools/helm && $(TOOL_BUILD) -o $(CURDIR)/$@ helm.sh/helm/v3/cmd/helm
