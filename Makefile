# memdbd build, test and local cluster.
#
#   make cluster   build and run a local 3-node cluster on loopback
#   make test      vet, unit, race, multi-node and end-to-end tests
#   make proto     regenerate api/proto with the pinned generators
#   make lint      gofmt, go vet, buf lint

GO        ?= go
BIN       := $(CURDIR)/bin
# Generator versions are pinned: `make proto-check` (run in CI) fails when
# regenerating with them changes the committed code.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
# The version google.golang.org/grpc already requires, so the runtime
# helpers the generated code imports come with no new module.
PROTOC_GEN_GO_VTPROTO_VERSION := v0.6.1-0.20240319094008-0393e58bdf10

# Packages with concurrency run under the race detector.
RACE_PKGS := ./store/... ./fsm/... ./watch/... ./node/... ./server/... ./client/... ./internal/... ./loadtest

.PHONY: all build test test-short race proto proto-check lint cluster fuzz bench clean tools chaos bench-compare loadtest-failover docker-build docker-up docker-down

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/memdbd ./cmd/memdbd

test: lint
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

test-short:
	$(GO) test -short -count=1 ./...

race:
	$(GO) test -count=1 -race $(RACE_PKGS)

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/protoc-gen-go-vtproto:
	GOBIN=$(BIN) $(GO) install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@$(PROTOC_GEN_GO_VTPROTO_VERSION)

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-go-vtproto

proto: tools
	cd api/proto && $(BIN)/buf lint && $(BIN)/buf generate && BIN=$(BIN) ./vtgen.sh

# Fails when the committed generated code is not what the pinned
# generators produce from the committed .proto files.
proto-check: proto
	@git diff --exit-code -- api/proto || (echo "generated code is stale: run make proto and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- api/proto)" || (git status --porcelain -- api/proto; echo "make proto produced new files" >&2; exit 1)

# The comparison harness (loadtest/etcdcompare) is a module of its own,
# outside ./...: it is vetted too, so that a change to the load generator
# cannot break it unseen.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd loadtest/etcdcompare && $(GO) vet ./...

cluster: build
	./deploy/local/cluster.sh

# Short fuzz runs of every decoder of untrusted bytes, and of the gRPC
# handlers of a real one-member server.
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./fsm -run '^$$' -fuzz '^FuzzApply$$' -fuzztime $(FUZZTIME)
	$(GO) test ./fsm -run '^$$' -fuzz '^FuzzRestore$$' -fuzztime $(FUZZTIME)
	$(GO) test ./store -run '^$$' -fuzz '^FuzzDecodeRow$$' -fuzztime $(FUZZTIME)
	$(GO) test ./store -run '^$$' -fuzz '^FuzzDecodeKey$$' -fuzztime $(FUZZTIME)
	$(GO) test ./store -run '^$$' -fuzz '^FuzzLoaderAddRow$$' -fuzztime $(FUZZTIME)
	$(GO) test ./store -run '^$$' -fuzz '^FuzzKeyOrder$$' -fuzztime $(FUZZTIME)
	$(GO) test ./api/convert -run '^$$' -fuzz '^FuzzRequests$$' -fuzztime $(FUZZTIME)
	$(GO) test ./server -run '^$$' -fuzz '^FuzzHandlers$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./store ./fsm ./node

clean:
	rm -rf $(BIN) data artifacts

# Fault injection against a real 3-node cluster. SEED, DURATION, NEMESIS
# (comma-separated or mix) and WORKLOAD (comma-separated or all) select
# the run; a failed run leaves its history and logs in artifacts/.
SEED     ?= $(shell date +%s)
DURATION ?= 60s
NEMESIS  ?= mix
WORKLOAD ?= all
chaos:
	$(GO) run ./chaos/cmd/memdb-chaos -seed $(SEED) -duration $(DURATION) -nemesis $(NEMESIS) -workload $(WORKLOAD)

# memdbd against etcd v3.7 on this machine, one after the other in one run
# (loadtest/etcdcompare is a module of its own: memdbd never depends on
# etcd). Prints memdbd/etcd ratios of throughput, p50 and p99.
COMPARE_DURATION ?= 10s
# Client objects per side: 1 (one per process, as both SDKs recommend) and 8.
COMPARE_CONNS    ?= 1,8
bench-compare:
	mkdir -p artifacts
	cd loadtest/etcdcompare && $(GO) run . -duration $(COMPARE_DURATION) -conns $(COMPARE_CONNS) -out ../../artifacts/bench-compare.json

# A quick load on a spawned local cluster, with a failover in the middle.
loadtest-failover:
	mkdir -p artifacts
	$(GO) run ./loadtest/cmd/memdb-loadtest -spawn -workload write -clients 32 -duration 15s -failover-at 5s -failover kill -html artifacts/failover.html

# Containers: an image FROM scratch around the static binary, and a
# 3-node cluster with docker-compose (ports 7001-7003 on the host).
IMAGE   ?= memdbd:dev
COMPOSE := docker-compose -p memdbd -f deploy/docker/docker-compose.yml
docker-build: build
	docker build -t $(IMAGE) -f deploy/docker/Dockerfile bin
docker-up: docker-build
	MEMDBD_IMAGE=$(IMAGE) $(COMPOSE) up -d
	@echo "waiting for the nodes to report healthy..."
	@for i in $$(seq 1 60); do \
	  n=$$(docker ps --filter label=com.docker.compose.project=memdbd --filter health=healthy -q | wc -l); \
	  [ "$$n" = 3 ] && { echo "3 nodes healthy: grpcurl -plaintext 127.0.0.1:7001 list"; exit 0; }; sleep 1; done; \
	  echo "nodes not healthy after 60s; see: $(COMPOSE) logs" >&2; exit 1
docker-down:
	$(COMPOSE) down -v
