# Ferry's two commands: `make run` and `make test`. Everything else here
# serves them. Both install the Debian packages that are missing first.

BUILD      ?= build
BUILD_SAN  ?= build-asan
PYTHON     ?= /usr/bin/python3
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

DEB_PACKAGES := cmake make gcc pkg-config \
	libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev \
	libssl-dev libcmocka-dev python3 python3-pytest python3-prometheus-client \
	openssl

# Benchmarks only (make bench, make bench-smoke); not needed to build or test.
BENCH_BUILD    ?= build-bench
BENCH_PACKAGES := wrk nginx-light gnuplot-nox

.PHONY: all deps build build-asan run test test-unit test-blackbox \
	test-asan clean help

all: build

help:
	@echo "make run    install missing packages, build, start Ferry (embedded default config)"
	@echo "make test   install missing packages, build, run every test (plain and ASan+UBSan)"
	@echo "make build  configure and build into $(BUILD)/"
	@echo "make clean  remove build directories"
	@echo "make bench  run the benchmarks (~15 min), rewrite docs/BENCHMARKS.md"

# Install only what is missing; sudo when not root.
deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DFERRY_SANITIZE=address,undefined $(CMAKE_ARGS)
	cmake --build $(BUILD_SAN) -j $(JOBS)

# Starts on the embedded default unless FERRY_CONFIG or ARGS say otherwise.
run: build
	./$(BUILD)/ferry serve $(ARGS)

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

test-blackbox: build
	FERRY_BIN=$(CURDIR)/$(BUILD)/ferry $(PYTHON) -m pytest -q -p no:cacheprovider tests/blackbox

# Container images and docker/compose.yaml end to end (tests/containers).
# Needs a Docker engine; without one the test is reported as skipped, with
# the reason. debootstrap makes the base image when the engine has none.
CONTAINER_PACKAGES := debootstrap debian-archive-keyring
.PHONY: test-containers
test-containers:
	@pkgs="python3 python3-pytest"; \
	if timeout 30 docker info >/dev/null 2>&1; then pkgs="$$pkgs $(CONTAINER_PACKAGES)"; fi; \
	$(MAKE) --no-print-directory deps DEB_PACKAGES="$$pkgs"
	$(PYTHON) -m pytest -q -rs -s -p no:cacheprovider tests/containers

# Kubernetes manifests (k8s/, checked by tests/k8s): render every overlay
# with kustomize, decode each object strictly against the API types, check
# the contract and `ferry check-config` on the ConfigMaps; the Go tests
# prove that broken manifests fail. Go is not a Debian package here
# (bookworm's is too old): it is taken from PATH, else /usr/local/go.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
.PHONY: test-k8s
test-k8s: build
	@command -v "$(GO)" >/dev/null 2>&1 || { echo "test-k8s: Go 1.25 or newer is needed" \
	  "(https://go.dev/dl/); none at $(GO); set GO=/path/to/go" >&2; exit 1; }
	cd tests/k8s && FERRY_BIN=$(CURDIR)/$(BUILD)/ferry $(GO) test -count=1 ./...
	cd tests/k8s && $(GO) build -o $(CURDIR)/$(BUILD)/k8s-check .
	$(BUILD)/k8s-check -ferry $(BUILD)/ferry $(patsubst %/,%,$(wildcard k8s/overlays/*/))

# Sanitizer run: the same unit and black-box tests against an
# AddressSanitizer + UndefinedBehaviorSanitizer build; any report fails.
test-asan: build-asan
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -L unit
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  FERRY_BIN=$(CURDIR)/$(BUILD_SAN)/ferry FERRY_SANITIZED=1 \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/blackbox

# Everything, as CI runs it. The timing-sensitive suites run one at a
# time; the container build, the Kubernetes checker and the fuzzers only
# need CPU and share the machine (test-heavy), which keeps a cold run,
# with no images and no Go module cache, under 20 minutes on 2 cores.
# Every package is installed first, in one apt run, so that the parallel
# stage never runs two apt-gets at once.
test: deps-test test-unit test-blackbox test-asan test-heavy test-valgrind \
	test-reliability bench-smoke

.PHONY: deps-test test-heavy
deps-test:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) \
	  $(FUZZ_PACKAGES) $(VALGRIND_PACKAGES) $(BENCH_PACKAGES) $(CONTAINER_PACKAGES)"

test-heavy: build
	$(MAKE) --no-print-directory -j3 --output-sync=target \
	  test-containers test-k8s test-fuzz

# Reliability campaign (tests/reliability, docs/RELIABILITY.md): crash loop,
# chaos peers, disk full and spool limit under load, hostile clients.
# `test-reliability` is CI-sized (a few minutes, writes no document);
# `reliability` runs long settings plus fuzzing (FUZZ_SECONDS per target)
# and the memory-safety suites (valgrind on every black-box test: about 20
# of its ~30 minutes), then rewrites docs/RELIABILITY.md; knobs in
# tests/reliability/run.sh.
FUZZ_SECONDS ?= 60
.PHONY: test-reliability reliability
test-reliability: build
	FERRY_BIN=$(CURDIR)/$(BUILD)/ferry FERRY_REL_OUT=$(CURDIR)/$(BUILD)/reliability-ci \
	  $(PYTHON) -m pytest -q -rxs -p no:cacheprovider tests/reliability

reliability: build
	@$(MAKE) --no-print-directory deps \
	  DEB_PACKAGES="$(DEB_PACKAGES) $(FUZZ_PACKAGES) $(VALGRIND_PACKAGES)"
	BUILD=$(BUILD) PYTHON=$(PYTHON) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/reliability/run.sh

# Benchmarks (bench/README.md). `bench` rewrites docs/BENCHMARKS.md and its
# charts; `bench-smoke` runs every scenario tiny (under 90 s) and writes its
# report to $(BENCH_BUILD)/ only, so CI never rewrites docs/.
.PHONY: bench bench-smoke bench-tools bench-deps
bench-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_PACKAGES)"

bench-tools: deps bench-deps
	cmake -S bench -B $(BENCH_BUILD)/tools -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BENCH_BUILD)/tools -j $(JOBS)

bench: build bench-tools
	$(PYTHON) bench/run.py --ferry $(BUILD)/ferry --build-dir $(BENCH_BUILD)

bench-smoke: build bench-tools
	$(PYTHON) bench/run.py --smoke --ferry $(BUILD)/ferry --build-dir $(BENCH_BUILD)

# Fuzzing (tests/fuzz/README.md): replay every committed reproducer, then
# run each libFuzzer target (clang, ASan+UBSan) for FUZZ_CI_SECONDS, two at
# a time; figures in $(BUILD_FUZZ)/fuzz-results. Longer:
# `make test-fuzz FUZZ_CI_SECONDS=300` or `tests/fuzz/run.sh 300 OUTDIR`.
BUILD_FUZZ      ?= build-fuzz
FUZZ_CI_SECONDS ?= 20
FUZZ_PACKAGES   := clang libclang-rt-dev
.PHONY: test-fuzz
test-fuzz:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) $(FUZZ_PACKAGES)"
	FUZZ_BUILD=$(BUILD_FUZZ) tests/fuzz/run.sh $(FUZZ_CI_SECONDS)

# valgrind memcheck (tests/valgrind/README.md): black-box tests against a
# RelWithDebInfo build run under memcheck; any memory error or definite or
# indirect leak fails the test. CI runs the subset in
# tests/valgrind/ci-tests.txt (1-2 minutes); VALGRIND_ALL=1 runs the whole
# black-box suite (10-25 minutes, with the machine's load).
BUILD_VG         ?= build-vg
VALGRIND_PACKAGES := valgrind
VALGRIND_TESTS   ?= $(if $(filter 1,$(VALGRIND_ALL)),tests/blackbox,\
	$(shell grep -v '^\#' tests/valgrind/ci-tests.txt))
.PHONY: build-vg test-valgrind
build-vg:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) $(VALGRIND_PACKAGES)"
	cmake -S . -B $(BUILD_VG) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)
	cmake --build $(BUILD_VG) -j $(JOBS) --target ferry

test-valgrind: build-vg
	VG_FERRY_BIN=$(CURDIR)/$(BUILD_VG)/ferry \
	  FERRY_BIN=$(CURDIR)/tests/valgrind/ferry-valgrind.sh FERRY_VALGRIND=1 \
	  FERRY_TEST_TIMEOUT_SCALE=$${FERRY_TEST_TIMEOUT_SCALE:-10} \
	  $(PYTHON) -m pytest -q -rs -p no:cacheprovider $(foreach t,$(VALGRIND_TESTS),'$(t)')

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ) $(BUILD_VG) $(BENCH_BUILD)
