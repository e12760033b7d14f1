# berth — see README.md. `make run` serves berth on a fresh Debian machine;
# `make test` installs and starts what the tests need, then runs them all.

GO       ?= go
BIN      := bin/berth
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)

.PHONY: build console test bench run install vet lint fuzz clean

# The agent runs inside arbitrary images, so the binary must be static.
build: console
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/berth

# The web console (web/, npm + esbuild) into console/dist, embedded by go build.
console:
	scripts/build-console.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# staticcheck, pinned; deprecations the project relies on on purpose are
# marked //lint:ignore where they are used.
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

test: build
	scripts/test.sh

# The suite while a CPU hog keeps every core busy, to catch tests that rely
# on timing; LOAD_RUNS=3 runs it three times in a row (scripts/test-load.sh).
test-load: build
	scripts/test-load.sh

bench: build
	scripts/bench.sh

run: build
	scripts/run.sh

# berth as a systemd service on the host's containerd, with /etc/berth/config.yaml
# (see README, "Running berth as a service"). DESTDIR=dir only lays the files
# out under dir.
PREFIX   ?= /usr/local
DESTDIR  ?=
install: build
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BIN="$(BIN)" scripts/install.sh

# Short fuzzing of the input parsers (paths, archives, protocol input); the
# seed corpora also run in `make test`. FUZZTIME sets the time per target.
FUZZTIME ?= 15s
FUZZ = $(GO) test -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
fuzz:
	$(FUZZ) -fuzz '^FuzzParseSize$$' ./internal/workspace/
	$(FUZZ) -fuzz '^FuzzValidateBotID$$' ./internal/workspace/
	$(FUZZ) -fuzz '^FuzzResolvePath$$' ./internal/agent/server/
	$(FUZZ) -fuzz '^FuzzArchiveName$$' ./internal/agent/server/
	$(FUZZ) -fuzz '^FuzzArchiveSymlink$$' ./internal/agent/server/
	$(FUZZ) -fuzz '^FuzzImportTar$$' ./internal/agent/server/
	$(FUZZ) -fuzz '^FuzzReadExecEvents$$' ./internal/agent/client/
	$(FUZZ) -fuzz '^FuzzDecodeHealth$$' ./internal/agent/client/
	$(FUZZ) -fuzz '^FuzzParse$$' ./internal/skills/
	$(FUZZ) -fuzz '^FuzzValidateName$$' ./internal/skills/
	$(FUZZ) -fuzz '^FuzzFederatedNames$$' ./internal/mcpproxy/
	$(FUZZ) -fuzz '^FuzzParseBody$$' ./internal/mcpproxy/
	$(FUZZ) -fuzz '^FuzzLineReader$$' ./internal/mcpproxy/
	$(FUZZ) -fuzz '^FuzzValidateDomainPattern$$' ./internal/netpolicy/
	$(FUZZ) -fuzz '^FuzzServeDNS$$' ./internal/dnsproxy/
	$(FUZZ) -fuzz '^FuzzUpstreamReply$$' ./internal/dnsproxy/

clean:
	rm -rf bin
