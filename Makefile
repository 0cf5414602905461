# Harvest Hub edge. The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
TOOLS := $(CURDIR)/.tools
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/harvest-hub/edge/internal/buildinfo.Version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
# go test across packages: bounded so the Firestore emulators and brokers tests start
# do not crowd a two-core machine.
TEST_FLAGS ?= -race -count=1 -timeout 20m -p 2

.PHONY: help build run test dev-services vet staticcheck gotest bench fuzz fmt certs docker-up docker-down docker-logs clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: ## build harvest-proxy, harvest-worker and harvest-seed into ./bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

run: build dev-services ## start the emulator (seeded), the proxy and the worker; Ctrl-C stops all
	@bash deploy/run.sh

test: dev-services vet staticcheck gotest ## vet, staticcheck and every test (integration included) against real services

dev-services: ## install and start what the tests need (Redis, RabbitMQ, nginx, Java, emulator check)
	@bash deploy/dev-services.sh

vet:
	$(GO) vet ./...

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(TOOLS)/staticcheck
	$(TOOLS)/staticcheck ./...

gotest:
	$(GO) test $(TEST_FLAGS) ./...

bench: build dev-services ## benchmarks, printed side by side with their baselines
	@bash deploy/bench.sh

FUZZTIME ?= 20s
fuzz: ## run every fuzz target for FUZZTIME each (the seeds also run in make test)
	$(GO) test -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $(FUZZTIME) ./classify/
	$(GO) test -run '^$$' -fuzz '^FuzzKeyParams$$' -fuzztime $(FUZZTIME) ./classify/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./firestorepath/
	$(GO) test -run '^$$' -fuzz '^FuzzEntryUnmarshal$$' -fuzztime $(FUZZTIME) ./proxy/cache/
	$(GO) test -run '^$$' -fuzz '^FuzzParseBump$$' -fuzztime $(FUZZTIME) ./proxy/cache/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./rules/
	$(GO) test -run '^$$' -fuzz '^FuzzMatch$$' -fuzztime $(FUZZTIME) ./rules/
	$(GO) test -run '^$$' -fuzz '^FuzzForward$$' -fuzztime $(FUZZTIME) ./proxy/webchannel/
	$(GO) test -run '^$$' -fuzz '^FuzzBackchannel$$' -fuzztime $(FUZZTIME) ./proxy/webchannel/
	$(GO) test -run '^$$' -fuzz '^FuzzRequest$$' -fuzztime $(FUZZTIME) ./proxy/webchannel/
	$(GO) test -run '^$$' -fuzz '^FuzzHandlePost$$' -fuzztime $(FUZZTIME) ./proxy/webchannel/

certs: ## a self-signed TLS pair for nginx in development (deploy/certs/)
	@bash deploy/make-certs.sh

docker-up: ## build and start the Compose stack (needs a Docker engine and a .env)
	@test -f .env || { echo "copy .env.example to .env and set the passwords first"; exit 1; }
	docker compose up -d --build --wait

docker-down: ## stop the Compose stack (volumes kept)
	docker compose down --remove-orphans

docker-logs: ## follow the Compose stack's logs
	docker compose logs -f --tail=100

fmt: ## gofmt and go mod tidy
	gofmt -w $$(git ls-files '*.go')
	$(GO) mod tidy

clean:
	rm -rf $(BIN) $(TOOLS) .run
