# The project's entry points. `make run` and `make test` are the README's two
# commands; both install missing Debian packages first (scripts/install-deps.sh).
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)

.PHONY: all deps configure build test run clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) > /dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

run: build
	@if [ ! -x $(BUILD_DIR)/bin/tcm-server ]; then \
	  echo "make run: tcm-server is not in this build yet; the model tools are in $(BUILD_DIR)/bin" >&2; \
	  exit 1; \
	fi
	$(BUILD_DIR)/bin/tcm-server --model_repository models

clean:
	rm -rf $(BUILD_DIR)
