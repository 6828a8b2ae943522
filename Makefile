# twill: build, test, bench, demo. Run as root on Debian (tests and demo use network namespaces).
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)
PREFIX ?= /opt/cni/bin
DESTDIR ?=
BINS := host-local bridge-host-gw vxlan
# Plugins are static binaries for the musl target when rustup can provide it (fastest start-up,
# see scripts/release-target.sh), else for the host's glibc target with crt-static. Only target
# artifacts get the flag (proc-macros stay dynamic), hence the explicit --target.
TRIPLE := $(shell PATH="$(PATH)" sh scripts/release-target.sh)
TRIPLE_ENV := $(shell echo '$(TRIPLE)' | tr 'a-z-' 'A-Z_')
RELEASE := target/$(TRIPLE)/release
export TWILL_BIN_DIR ?= $(CURDIR)/$(RELEASE)
APT_PKGS := iproute2 containernetworking-plugins iputils-ping nftables tcpdump util-linux procps iperf3

.PHONY: all deps build test unit conformance lint bench install demo clean

all: build

## deps: install the Debian packages tests and demo need (skips what is present).
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

## build: release binaries of every plugin and the bench harness.
build:
	CARGO_TARGET_$(TRIPLE_ENV)_RUSTFLAGS="-C target-feature=+crt-static" \
	  $(CARGO) build --release --target $(TRIPLE) --workspace --bins

## test: lint, unit tests, kernel integration tests and the black-box conformance suite (root).
test: deps lint build unit conformance

unit:
	$(CARGO) test --workspace --exclude conformance

conformance: build
	$(CARGO) test -p conformance

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: twill vs the reference Go plugins (Debian containernetworking-plugins), medians and ratios.
bench: deps build
	$(RELEASE)/twill-bench all

## install: plugin binaries into $(DESTDIR)$(PREFIX).
install: build
	install -d $(DESTDIR)$(PREFIX)
	for b in $(BINS); do [ -x $(RELEASE)/$$b ] && install -m 0755 $(RELEASE)/$$b $(DESTDIR)$(PREFIX)/$$b; done; true

## demo: a 3-node bridge-host-gw cluster in network namespaces on this machine, then cleaned up.
demo: deps build
	bash demo/demo.sh

clean:
	$(CARGO) clean
