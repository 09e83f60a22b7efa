# The two commands (see README.md):
#   make run    set up this machine, build, and run chatgate on its embedded default config
#   make test   set up this machine, build, and run every test
# Also: make build, make test-asan, make test-stress, make fuzz, make deb, make bench, make format, make tidy, make clean.

BUILD_DIR ?= build
ASAN_DIR ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps test-deps fuzz-deps build run test test-asan test-stress fuzz bench format tidy clean deb package-test

all: build

deps:
	@sh packaging/install-build-deps.sh

test-deps:
	@sh packaging/install-build-deps.sh --test

fuzz-deps:
	@sh packaging/install-build-deps.sh --fuzz

$(BUILD_DIR)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	./$(BUILD_DIR)/chatgate

test: test-deps build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

test-asan: test-deps
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DCG_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

# The suite three times with ctest -j4 while two busy loops load both cores.
test-stress: test-deps build
	sh tests/stress.sh $(BUILD_DIR) 3

# libFuzzer targets (tests/fuzz) built with clang + ASan + UBSan in
# build-fuzz/, then each run for FUZZ_SECONDS from its seed corpus.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: fuzz-deps
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCG_FUZZ=ON \
	  -DCG_BUILD_TESTS=OFF $(CMAKE_FLAGS)
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_targets
	sh tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

# chatgate_<version>_amd64.deb and chatgate-dev_<version>_amd64.deb in
# build-deb/ (an install prefix of /usr, so the binary looks for plugins in
# /usr/lib/chatgate/plugins).
DEB_DIR ?= build-deb
deb: deps
	cmake -S . -B $(DEB_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
	  -DCG_BUILD_TESTS=OFF $(CMAKE_FLAGS)
	cmake --build $(DEB_DIR) -j $(JOBS)
	cd $(DEB_DIR) && cpack -G DEB

# Installs the packages on this machine (root or sudo), runs them, purges them.
package-test: test-deps
	sh tests/package/package_test.sh

bench: build
	bench/chat.sh

format:
	clang-format -i $$(git ls-files '*.cc' '*.h' '*.c')

# clang-tidy with the root .clang-tidy over the core and the plugins.
tidy: build
	clang-tidy -p $(BUILD_DIR) --quiet $$(git ls-files 'core/*/*.cc' 'plugins/*.cc' 'plugins/*.c')

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(DEB_DIR) $(FUZZ_DIR)
