# arcane: Caddy with the arcane modules.
#
#   make run     build with xcaddy and serve Caddyfile.example with a demo key
#   make test    everything CI runs: formatting, vet, staticcheck, every test
#                (the domain packages under the race detector), the
#                dashboard's browser test among them (installs its npm
#                packages; needs Debian's chromium)
#   make screenshots  the dashboard's pages as PNGs in docs/screenshots, for
#                the README, taken by the browser test
#   make build   bin/caddy through xcaddy, as xcaddy.json says
#   make lint    gofmt, go vet, staticcheck
#   make bench   the load benchmark: direct mock vs stock Caddy vs arcane
#                (BENCHFLAGS=-quick for a ~1 min smoke run)
#   make soak    arcane for 10 minutes at half its measured maximum rate:
#                memory and goroutines flat, no error, the books consistent
#                (SOAKFLAGS='-soak-duration 1m' for a short one)
#   make microbench  the Go benchmarks

GO            ?= go
XCADDY_VERSION = v0.4.5
STATICCHECK    = honnef.co/go/tools/cmd/staticcheck@v0.8.2
TOOLS          = $(CURDIR)/bin/tools
XCADDY         = $(TOOLS)/xcaddy-$(XCADDY_VERSION)
CADDY          = bin/caddy

# make run's defaults; override on the command line (make run PORT=9000).
PORT          ?= 8080
ADMIN         ?= localhost:2019
# What a dashboard sign-up gets under make run, to try the API at once.
STARTING_BALANCE ?= 5.00

# The dashboard's browser test (caddymodule/dashboard_browser_test.go) runs a
# Playwright script in Debian's chromium (/usr/bin/chromium; .ci/run installs
# it) with its npm packages, playwright-core alone, installed here; never a
# downloaded browser.
BROWSER      = caddymodule/testdata/browser
BROWSER_DEPS = $(BROWSER)/node_modules/.package-lock.json

.PHONY: build run test screenshots race lint bench soak microbench fuzz clean

build: $(XCADDY)
	$(XCADDY) build $$($(GO) run ./cmd/xcaddyargs xcaddy.json) --output $(CADDY)

# xcaddy, pinned and kept inside the checkout, installed when missing.
$(XCADDY):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION)
	mv $(TOOLS)/xcaddy $(XCADDY)

run: build
	ARCANE_DEMO=on ARCANE_STARTING_BALANCE=$(STARTING_BALANCE) ARCANE_SITE=:$(PORT) ARCANE_ADMIN=$(ADMIN) \
		$(CADDY) run --config Caddyfile.example --adapter caddyfile

# The domain packages run under the race detector. The Caddy glue and the
# built-binary tests run without it: instrumenting all of Caddy for -race
# costs more CI time on two cores than the glue's few goroutines repay
# (run `make race` for the whole tree).
test: lint $(BROWSER_DEPS)
	$(GO) test -race -count=1 ./billing/... ./ratelimit/... ./upstream/...
	$(GO) test -count=1 ./...
	@echo "make test: all passed"

# The browser test's npm packages (see BROWSER above), installed as
# package-lock.json pins them, again whenever it changes.
$(BROWSER_DEPS): $(BROWSER)/package.json $(BROWSER)/package-lock.json
	npm ci --prefix $(BROWSER) --no-audit --no-fund
	@touch $@

# Full-page screenshots of every dashboard page, for the README: the
# browser test's story, saved as it goes.
screenshots: $(BROWSER_DEPS)
	ARCANE_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run TestDashboardInBrowser ./caddymodule/

race:
	$(GO) test -race -count=1 ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# The load benchmark: a plain go build of Caddy with arcane (fast with the
# build cache), then cmd/bench against it, on loopback. BENCHFLAGS passes
# flags, e.g. make bench BENCHFLAGS='-quick' or '-rounds 5 -json bench.json'.
BENCHFLAGS ?=
bench:
	$(GO) build -o bin/caddy-bench ./cmd/caddy
	$(GO) build -o bin/bench ./cmd/bench
	bin/bench -caddy bin/caddy-bench $(BENCHFLAGS)

# The soak, issue 9's last target: the benchmark's environment and Caddy,
# arcane alone at half the maximum rate of its own open-loop load (which it
# measures first, in steps), for 10 minutes, then
# PASS or FAIL per criterion (exit status 1 on a FAIL). SOAKFLAGS passes
# flags, e.g. make soak SOAKFLAGS='-soak-duration 1m -json soak.json'.
SOAKFLAGS ?=
soak:
	$(GO) build -o bin/caddy-bench ./cmd/caddy
	$(GO) build -o bin/bench ./cmd/bench
	bin/bench -caddy bin/caddy-bench -soak $(SOAKFLAGS)

microbench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Each fuzz target for FUZZTIME (default 30s); findings land in the
# package's testdata/fuzz and become regression tests.
FUZZTIME ?= 30s
FUZZ_TARGETS = \
	./billing:FuzzParseAmount ./billing:FuzzParseSecret \
	./upstream/openai:FuzzWalk ./upstream/openai:FuzzScanRequest \
	./upstream/openai:FuzzAppendWithModel ./upstream/openai:FuzzChunk \
	./upstream/sse:FuzzReader ./upstream/sse:FuzzRoundTrip \
	./upstream/tokens:FuzzCount ./upstream/tokens:FuzzBoundary \
	./upstream/mock:FuzzChatCompletions ./upstream/mock:FuzzMessages \
	./billing:FuzzCost ./upstream/openai:FuzzAppendUsageCost ./ratelimit:FuzzAllow \
	./upstream/anthropic:FuzzRequest ./upstream/anthropic:FuzzStream ./upstream/anthropic:FuzzFastDelta \
	./billing:FuzzCheckPassword ./billing:FuzzNormalizeEmail ./billing:FuzzReadRecords
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

clean:
	rm -rf bin
