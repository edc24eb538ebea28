# Thin wrapper over CMake. `make run` and `make test` install what is missing first.
BUILD  ?= build
ASAN   ?= build-asan
PREFIX ?= /usr/local
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build asan run test test-c test-lua lint bench install package clean

all: build

deps:
	@sh scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN)/CMakeCache.txt:
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DROUTEMQ_SANITIZE=ON >/dev/null

asan: deps $(ASAN)/CMakeCache.txt
	cmake --build $(ASAN) -j $(JOBS)

run: build
	$(BUILD)/routemq dev --app .

test: build asan
	@sh scripts/test.sh $(BUILD) $(ASAN)

bench: build
	@sh bench/run.sh $(BUILD)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# build/routemq_<version>_<arch>.deb, built in build/deb with Debian's
# hardening flags and the multiarch directory for routemq.core.
DEB_FLAGS = $(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS 2>/dev/null) $(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS 2>/dev/null)
DEB_LDFLAGS = $(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS 2>/dev/null)
MULTIARCH = $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null)
package: deps
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
	rm -rf $(BUILD) $(ASAN)
