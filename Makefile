# Thin wrapper over CMake. Each target checks the dependency tier it needs
# (scripts/deps.sh): as root it installs what is missing, otherwise it names it.
BUILD  ?= build
ASAN   ?= build-asan
FUZZ   ?= build-fuzz
PREFIX ?= /usr/local
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
# `make soak`: how long the randomized soak runs, and its seed (empty: a new one, printed).
SOAK_SECONDS ?= 600
SOAK_SEED ?=
# One spec file or directory (TEST_FILE) and one busted --filter pattern
# (TEST_FILTER) for `make unittest` and `make functionaltest`.
TEST_FILE ?=
TEST_FILTER ?=
# Each tier is checked once, then again only when scripts/deps.sh changes
# (`make deps` checks every tier again).
DEPS = $(BUILD)/.deps

.PHONY: all deps build asan fuzz-build run unittest functionaltest lint fuzz soak test bench install package clean

all: build

deps:
	@sh scripts/deps.sh all
	@mkdir -p $(BUILD) && for t in build run unit e2e fuzz package all; do touch $(DEPS)-$$t; done

$(DEPS)-%: scripts/deps.sh
	@sh scripts/deps.sh $*
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: $(DEPS)-build $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN)/CMakeCache.txt:
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DROUTEMQ_SANITIZE=ON >/dev/null

asan: $(DEPS)-build $(ASAN)/CMakeCache.txt
	cmake --build $(ASAN) -j $(JOBS)

# The fuzz targets need clang's libFuzzer: a build directory of their own.
$(FUZZ)/CMakeCache.txt:
	CC=clang cmake -S . -B $(FUZZ) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DROUTEMQ_FUZZ=ON >/dev/null

fuzz-build: $(DEPS)-fuzz $(FUZZ)/CMakeCache.txt
	cmake --build $(FUZZ) --target fuzz -j $(JOBS)

# Only errors and warnings of the build show; then the development server.
run: $(DEPS)-run $(DEPS)-build $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS) >/dev/null
	$(BUILD)/routemq dev --app .

# C tests and busted specs: no broker, well under a minute.
unittest: $(DEPS)-unit build
	@TEST_FILE='$(TEST_FILE)' TEST_FILTER='$(TEST_FILTER)' sh scripts/test.sh --unit $(BUILD)

# End-to-end specs against a real mosquitto.
functionaltest: $(DEPS)-e2e build
	@TEST_FILE='$(TEST_FILE)' TEST_FILTER='$(TEST_FILTER)' sh scripts/test.sh --functional $(BUILD)

lint: $(DEPS)-unit
	luacheck -q lua app spec examples bench

# Each fuzz target for FUZZ_SECONDS, from the corpus in runtime/fuzz/corpus.
fuzz: fuzz-build
	@sh scripts/fuzz.sh $(FUZZ) $(FUZZ_SECONDS)

# The randomized soak (spec/soak/README.md): reloads, deploys, kills, scaling
# and broker restarts under load, then the delivery invariants. SOAK_OPS and
# SOAK_ROUTES (comma-separated) choose what it does.
soak: $(DEPS)-e2e build
	@SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED) sh scripts/soak.sh $(BUILD)

# Everything: lint, unit, functional, the sanitizer runs and a short fuzz run.
test: $(DEPS)-all build asan fuzz-build
	@sh scripts/test.sh --all $(BUILD) $(ASAN) $(FUZZ)

bench: $(DEPS)-e2e build
	@sh bench/run.sh $(BUILD)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# build/routemq_<version>_<arch>.deb, built in build/deb with Debian's
# hardening flags and the multiarch directory for routemq.core.
DEB_FLAGS = $(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS 2>/dev/null) $(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS 2>/dev/null)
DEB_LDFLAGS = $(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS 2>/dev/null)
MULTIARCH = $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null)
package: $(DEPS)-package
	cmake -S . -B $(BUILD)/deb -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DROUTEMQ_PACKAGE=ON \
	  -DROUTEMQ_LUA_CMOD_DIR=lib/$(MULTIARCH)/lua/5.1 -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON \
	  -DCMAKE_C_FLAGS="$(DEB_FLAGS)" -DCMAKE_EXE_LINKER_FLAGS="$(DEB_LDFLAGS)" \
	  -DCMAKE_MODULE_LINKER_FLAGS="$(DEB_LDFLAGS)" >/dev/null
	cmake --build $(BUILD)/deb -j $(JOBS) --target routemq routemq_core manpage changelog
	rm -f $(BUILD)/deb/routemq_*.deb
	cd $(BUILD)/deb && cpack -G DEB >/dev/null
	mv $(BUILD)/deb/routemq_*.deb $(BUILD)/
	@ls $(BUILD)/routemq_*.deb

clean:
	rm -rf $(BUILD) $(ASAN) $(FUZZ)
