# The project's entry points. `make run` and `make test` are the README's two
# commands; both install missing Debian packages first (scripts/install-deps.sh).
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
# What `make build` builds: every target, or the ones named (the container image builds two).
BUILD_TARGETS ?=

.PHONY: all deps test-deps configure build test test-sanitize fuzz run clean

all: build

deps:
	@bash scripts/install-deps.sh

# What only the tests use (curl, promtool, yamllint, kubectl, clang-format...); `make run` goes without.
test-deps:
	@bash scripts/install-deps.sh --test

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) > /dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) $(if $(BUILD_TARGETS),--target $(BUILD_TARGETS))

test: test-deps build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# The whole suite under AddressSanitizer and UndefinedBehaviorSanitizer; the
# torch-free service layer's tests (batcher, call state, validation, response
# cache, access log, HTTP server, the REST front end over the generation front,
# and the gRPC reactors of tcm.v1, the Open Inference Protocol and health)
# under ThreadSanitizer, with Debian's Abseil and gRPC rebuilt instrumented so
# that every lock and hand-over inside them is visible to it (docs/RELIABILITY.md).
TSAN_TESTS = batcher_test pass_time_estimate_test request_state_test request_validation_test response_cache_test \
  server_options_test access_log_test http_server_test inference_mapping_test rest_json_test rest_service_test \
  tcm_service_test inference_service_test health_service_test
test-sanitize: test-deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTCM_SANITIZE=address,undefined > /dev/null
	@cmake --build build-asan -j $(JOBS)
	cd build-asan && LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -E '^deploy\.container_image$$'
	@JOBS=$(JOBS) bash scripts/build-tsan-abseil.sh build-tsan-abseil
	@JOBS=$(JOBS) bash scripts/build-tsan-grpc.sh build-tsan-grpc
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTCM_SANITIZE=thread > /dev/null
	@cmake --build build-tsan -j $(JOBS) --target $(TSAN_TESTS)
	@bash scripts/run-tsan-tests.sh build-tsan build-tsan-grpc/lib:build-tsan-abseil/lib $(TSAN_TESTS)

# libFuzzer targets (clang, AddressSanitizer, UndefinedBehaviorSanitizer), each run
# FUZZ_SECONDS on its seed corpus; prints "fuzz_NAME: N runs, C crashes" per target.
FUZZ_SECONDS ?= 60
fuzz:
	@bash scripts/install-deps.sh --fuzz
	@cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DTCM_FUZZ_ONLY=ON > /dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@bash scripts/fuzz.sh build-fuzz $(FUZZ_SECONDS)

# Serves the embedded Fashion-MNIST models; the stage-2 TCM answers calls that name no model.
run: build
	$(BUILD_DIR)/bin/tcm-server --model_repository models --default_model fashion-mnist-tcm

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan build-tsan-abseil build-fuzz
