# twill: build, test, bench, demo. Run as root on Debian (tests and demo use network namespaces).
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)
PREFIX ?= /opt/cni/bin
DESTDIR ?=
BINS := host-local bridge-host-gw routed-veth ipip
# Plugins are static binaries for the musl target when rustup can provide it (fastest start-up,
# see scripts/release-target.sh), else for the host's glibc target with crt-static. Only target
# artifacts get the flag (proc-macros stay dynamic), hence the explicit --target.
TRIPLE := $(shell PATH="$(PATH)" sh scripts/release-target.sh)
TRIPLE_ENV := $(shell echo '$(TRIPLE)' | tr 'a-z-' 'A-Z_')
RELEASE := target/$(TRIPLE)/release
export TWILL_BIN_DIR ?= $(CURDIR)/$(RELEASE)
APT_PKGS := iproute2 containernetworking-plugins iputils-ping nftables tcpdump util-linux procps
# The real clients of the runtime suites (conformance/tests/{libcni,podman,containerd}.rs): Go and
# Debian's libcni source for the libcni driver, podman with runc, containerd, busybox-static for
# the local images, Debian's Python gRPC for the CRI client, iptables for portmap and firewall.
APT_PKGS += golang-go golang-github-appc-cni-dev podman runc containerd busybox-static \
  python3-grpcio iptables
# Build tree of the clients (never the source tree); the suites use it (TWILL_CLIENTS_DIR).
CLIENTS := $(CURDIR)/target/clients
export TWILL_CLIENTS_DIR ?= $(CLIENTS)
# `make install CONFLISTS=1` (or `make install-conflists`) also installs the sample conflists.
CONFDIR ?= /etc/cni/net.d
CONFLISTS ?=
# The VM test (conformance/tests/vm.rs): qemu boots Debian's cloud kernel (fetched into target/vm
# with apt-get download, never installed) with an initramfs of busybox, iproute2 and depmod'ed
# modules. Installed without recommends (qemu would pull a desktop stack).
VM_PKGS := qemu-system-x86 busybox-static cpio kmod

.PHONY: all deps build clients test unit conformance vm lint bench install install-conflists demo clean

all: build

## deps: install the Debian packages tests and demo need (skips what is present).
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@missing=""; for p in $(VM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

## build: release binaries of every plugin and the bench harness.
build:
	CARGO_TARGET_$(TRIPLE_ENV)_RUSTFLAGS="-C target-feature=+crt-static" \
	  $(CARGO) build --release --target $(TRIPLE) --workspace --bins

## clients: the libcni driver (Go, Debian's libcni, offline GOPATH build) into $(CLIENTS).
clients:
	@mkdir -p $(CLIENTS)
	cd conformance/clients/libcni && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off \
	  GOFLAGS= GOCACHE=$(CLIENTS)/go-cache go build -o $(CLIENTS)/twill-libcni .

## test: lint, unit tests, kernel integration tests and the black-box conformance suite, which
## includes the real-client suites (libcni, podman, containerd CRI) and the VM test (root).
test: deps lint build unit conformance

unit:
	$(CARGO) test --workspace --exclude conformance

conformance: build clients
	$(CARGO) test -p conformance

## vm: only the VM test (every data plane on Debian's stock cloud kernel, under qemu TCG).
vm: deps build
	$(CARGO) test -p conformance --test vm

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: twill vs the reference Go plugins (Debian containernetworking-plugins), medians and ratios.
bench: deps build
	$(RELEASE)/twill-bench all

## install: plugin binaries into $(DESTDIR)$(PREFIX); with CONFLISTS=1 also the sample conflists.
install: build
	install -d $(DESTDIR)$(PREFIX)
	for b in $(BINS); do [ -x $(RELEASE)/$$b ] && install -m 0755 $(RELEASE)/$$b $(DESTDIR)$(PREFIX)/$$b; done; true
	@if [ -n "$(CONFLISTS)" ]; then $(MAKE) --no-print-directory install-conflists; fi

## install-conflists: one sample conflist per plugin (examples/) into $(DESTDIR)$(CONFDIR); an
## existing file of the same name is kept, never overwritten.
install-conflists:
	install -d $(DESTDIR)$(CONFDIR)
	@for f in examples/*.conflist; do \
	  t=$(DESTDIR)$(CONFDIR)/$$(basename $$f); \
	  if [ -e $$t ]; then echo "keeping existing $$t"; else install -m 0644 $$f $$t && echo "installed $$t"; fi; \
	done

## demo: a 3-node bridge-host-gw cluster in network namespaces on this machine, then cleaned up.
demo: deps build
	bash demo/demo.sh

clean:
	$(CARGO) clean
