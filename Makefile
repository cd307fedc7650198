# dc-agent — see README.md. `make test` is what CI runs (.ci/run).
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/decent-stuff/dc-agent/internal/buildinfo.Version=$(VERSION) \
             -X github.com/decent-stuff/dc-agent/internal/buildinfo.Commit=$(COMMIT)
FUZZTIME  ?= 60s
DIST      ?= dist
SHELL_SCRIPTS := $(shell git ls-files '*.sh' 2>/dev/null) .ci/run

export GOTOOLCHAIN := local

.PHONY: all build test test-deps vet lint fmt fuzz demo bench bench-docker bench-proxmox bench-api bench-gateway bench-cloud clean release

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dc-agent ./cmd/dc-agent
	@if [ -d cmd/dc-api ] && ls cmd/dc-api/*.go >/dev/null 2>&1; then \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dc-api ./cmd/dc-api; fi

test-deps:
	@sh scripts/test-deps.sh

# Integration tests need real sshd, dockerd, PostgreSQL, systemd, chromium, tmux:
# DC_REQUIRE_INTEGRATION=1 turns a missing tool into a failure, never a skip.
test: test-deps vet lint
# packaging (it builds `make release`) is the longest package: named first,
# go test starts it first instead of last.
	DC_REQUIRE_INTEGRATION=1 $(GO) test -race -timeout 20m -count=1 ./packaging/ ./...

# Same build configuration as testutil.BuildBinary and `make release`
# (static, -trimpath): the packages vet compiles are then reused by both.
vet:
	CGO_ENABLED=0 $(GO) vet -trimpath ./...
	CGO_ENABLED=0 $(GO) vet -trimpath -tags testhooks ./cmd/dc-agent/

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@# Each script's shebang picks the dialect shellcheck checks (sh or bash).
	@if command -v shellcheck >/dev/null 2>&1; then shellcheck $(SHELL_SCRIPTS); \
	 else echo "shellcheck not installed (make test-deps)"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

# Runs every fuzz target (func FuzzXxx(f *testing.F)) for FUZZTIME (default
# 60s) each, one at a time; stops at the first crash, whose input go test
# keeps in the package's testdata/fuzz/FuzzXxx/ (commit it as a regression seed).
fuzz:
	@set -e; $(GO) list -f '{{.ImportPath}} {{.Dir}}' ./... | while read -r pkg dir; do \
	  for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)([A-Za-z_][A-Za-z0-9_]* \*testing\.F).*/\1/p' "$$dir"/*_test.go 2>/dev/null); do \
	    echo "== $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	  done; \
	done

# Built, then run (not `go run`, which exits 1 after Ctrl-C even when the
# demo stopped cleanly, so make would report an error).
demo:
	@$(GO) build -o bin/dc-demo ./cmd/dc-demo
	@$(GO) build -o bin/dc-agent ./cmd/dc-agent
	./bin/dc-demo

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./identity/ ./dcapi/
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench . -benchtime 3x ./tui/monitor/
	sh bench/proxmox-provision.sh

# Containers per minute on a real throwaway dockerd, concurrency 1 vs 4 (root).
bench-docker:
	sh bench/docker-provision.sh

bench-proxmox:
	sh bench/proxmox-provision.sh

# DigitalOcean and Vultr provisions per minute against the simulators'
# documented timings, concurrency 1 vs 4, and API calls per provision.
bench-cloud:
	sh bench/cloud-provision.sh

bench-api:
	sh bench/api-server.sh

# Gateway rules and routes for 500 VMs: nftables + Caddy in a netns (root).
bench-gateway:
	sh bench/gateway.sh

# Reproducible release artifacts in dist/ (layout: docs/release.md):
# binaries for linux amd64+arm64, install.sh, deb+rpm (nfpm), SHA256SUMS(.sig).
# Signed with RELEASE_KEY (a private key file kept outside the repository);
# the binaries trust the keys in RELEASE_KEYS (default packaging/release-keys.pub).
release:
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' GO='$(GO)' DIST='$(DIST)' RELEASE_KEY='$(RELEASE_KEY)' RELEASE_KEYS='$(RELEASE_KEYS)' sh scripts/release.sh

clean:
	rm -rf bin dist
