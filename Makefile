# Kappa's entry points. `make run` and `make test` are the two commands of
# the README: each installs and starts what it needs on a Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
GO ?= go
STACK := deploy/stack.sh
# The addresses of the local stack, for every target that talks to it.
STACK_ENV = eval "$$(bash $(STACK) env)"
GOLANGCI_VERSION := v2.15.0

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: run
run: stack build ## Start the stores and run every role in one process (embedded Kafka).
	$(STACK_ENV) && ./kappa dev --http-addr 127.0.0.1:8080

.PHONY: run-split
run-split: stack build ## Run every role as its own process against the real Kafka broker; makes an API key into .data/split-api-key.
	$(STACK_ENV) && ./kappa migrate && mkdir -p .data && \
	  ./kappa apikey create --tenant default --scopes commands:write,read --name run-split >.data/split-api-key && \
	  echo "API key for this run in .data/split-api-key (curl -H \"Authorization: Bearer \$$(cat .data/split-api-key)\")" && \
	  trap 'kill 0' EXIT INT TERM; \
	  ./kappa process & ./kappa project clickhouse & ./kappa project postgres & \
	  ./kappa ingest --auth api-keys --http-addr 127.0.0.1:8080 & wait

.PHONY: build
build: ## Build the kappa binary.
	$(GO) build -o kappa ./cmd/kappa

.PHONY: test
test: stack ## Start the local stack and run every test with the race detector.
	$(STACK_ENV) && export KAPPA_CHDB_PYTHON="$$(bash deploy/chdb.sh)" && \
	  KAPPA_INTEGRATION=require $(GO) test -race -count=1 -timeout 15m ./...

.PHONY: test-secure
test-secure: stack ## Run the end-to-end tests against the stack's secured endpoints (Kafka SASL_SSL, Postgres and ClickHouse over TLS).
	eval "$$(bash $(STACK) env-secure)" && \
	  KAPPA_INTEGRATION=require $(GO) test -race -count=1 -timeout 10m ./e2e/ ./kafka/ ./producer/ingest/

.PHONY: test-short
test-short: ## Run the tests that need no servers.
	$(GO) test -race -count=1 ./...

FUZZTIME ?= 60s
.PHONY: fuzz
fuzz: ## Fuzz command decoding, the command endpoints and the Authorization header (FUZZTIME each, default 60s).
	$(GO) test -run '^$$' -fuzz FuzzValidateCommand -fuzztime $(FUZZTIME) ./schemas/
	$(GO) test -run '^$$' -fuzz FuzzPostCommands -fuzztime $(FUZZTIME) ./api/
	$(GO) test -run '^$$' -fuzz FuzzAuthorizationHeader -fuzztime $(FUZZTIME) ./api/

LOADTEST_ARGS ?= --rate 2000 --duration 60s --batch-size 50
.PHONY: loadtest
loadtest: stack build ## Load-test a fresh deployment on the real stack (LOADTEST_ARGS, see kappa loadtest --help).
	bash deploy/loadtest.sh $(LOADTEST_ARGS) --out loadtest-results

.PHONY: loadtest-ci
loadtest-ci: stack build ## The short load profile CI runs, with the correctness check.
	bash deploy/loadtest.sh --ramp 300:8s,600:8s --connections 16 --out .stack/loadtest-ci
	bash deploy/loadtest.sh --rate 3000 --duration 10s --batch-size 50 --zipf 1.2 --out .stack/loadtest-ci-batch

BENCH_EVENTS ?= 500000
.PHONY: bench
bench: stack build ## Projections, ingest and the processor against their baselines, written to docs/BENCHMARKS.md.
	mkdir -p docs
	$(STACK_ENV) && ./kappa bench --events $(BENCH_EVENTS) --doc docs/BENCHMARKS.md

.PHONY: check
check: ## gofmt, go vet and golangci-lint.
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION) run ./...

.PHONY: stack
stack: ## Install (first time) and start Postgres, ClickHouse and Kafka on loopback.
	bash $(STACK) up

.PHONY: stack-down
stack-down: ## Stop the local stack; data stays in .stack/.
	bash $(STACK) down

.PHONY: stack-status
stack-status: ## Show which stack components are up.
	bash $(STACK) status

.PHONY: stack-purge
stack-purge: ## Stop the local stack and delete its data.
	bash $(STACK) down --purge

.PHONY: faults
faults: stack ## Run the fault-injection suite (kills, restarts, cut links, poison) and its negative control.
	$(STACK_ENV) && KAPPA_FAULTS=1 KAPPA_INTEGRATION=require $(GO) test -count=1 -v -timeout 20m -run 'TestFaults|TestBrokerRestartWhileIdle|TestPausedClickHouseWriter' ./faults/ 2>&1 | tee .stack/faults.log | grep -vE '^time=' 
	@grep -qE '^ok ' .stack/faults.log
