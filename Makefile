# cnab-relocate. Two commands do everything on a fresh machine:
#   make demo   relocate a sample bundle between two local registries, started
#               in the demo's own process: needs nothing but Go
#   make test   unit, fuzz-seed and end-to-end tests against a real registry
#               (installs the registries first: make deps)
GO        ?= go
BIN       := bin/cnab-relocate
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME  ?= 10s
BENCHFLAGS ?=

.PHONY: all build deps test unit e2e demo bench fuzz vet clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/cnab-relocate

# The registries (Debian's docker-registry, distribution v3) and skopeo that the
# e2e tests and the benchmarks run on 127.0.0.1. The demo needs none of them.
deps:
	bash scripts/install-deps.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: deps build
	$(GO) test -count=1 -timeout 15m ./e2e/...

test: deps vet build
	$(GO) test -count=1 -timeout 20m ./...

demo: build
	$(GO) run ./internal/cmd/demo -bin $(BIN)

bench: deps build
	$(GO) run ./internal/cmd/bench -bin $(BIN) $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./relocator ./fixup

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzMap -fuzztime $(FUZZTIME) ./relocator
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./fixup

clean:
	rm -rf bin .tmp
