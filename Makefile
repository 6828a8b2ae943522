# twill: build, test, bench, demo. Run as root on Debian (tests and demo use network namespaces).
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)
PREFIX ?= /opt/cni/bin
DESTDIR ?=
BINS := host-local bridge-host-gw routed-veth vxlan ipip
# The node daemon is not a CNI plugin: it goes to SBINDIR with its systemd unit, its defaults
# file (kept when present) and an example network config (never into the conf dir itself).
DAEMONS := twilld
SBINDIR ?= /usr/local/sbin
UNITDIR ?= /etc/systemd/system
DOCDIR ?= /usr/local/share/doc/twill
# Plugins are static binaries for the musl target when rustup can provide it (fastest start-up,
# see scripts/release-target.sh), else for the host's glibc target with crt-static. Only target
# artifacts get the flag (proc-macros stay dynamic), hence the explicit --target.
TRIPLE := $(shell PATH="$(PATH)" sh scripts/release-target.sh)
TRIPLE_ENV := $(shell echo '$(TRIPLE)' | tr 'a-z-' 'A-Z_')
RELEASE := target/$(TRIPLE)/release
export TWILL_BIN_DIR ?= $(CURDIR)/$(RELEASE)
APT_PKGS := iproute2 containernetworking-plugins iputils-ping nftables tcpdump util-linux procps iperf3
# strace counts the descriptors each call opens (conformance/tests/soak.rs, twill-bench soak);
# netavark is podman's network stack, set beside bridge-host-gw by `make bench`.
APT_PKGS += strace netavark
# twilld's TLS (rustls on ring) compiles C for the static musl target with musl-gcc.
APT_PKGS += musl-tools
# The real clients of the runtime suites (conformance/tests/{libcni,podman,containerd}.rs): Go and
# Debian's libcni source for the libcni driver, podman with runc, containerd, busybox-static for
# the local images, Debian's Python gRPC for the CRI client, iptables for portmap and firewall.
APT_PKGS += golang-go golang-github-appc-cni-dev podman runc containerd busybox-static \
  python3-grpcio iptables
# twilld's etcd mode (conformance/tests/etcd.rs, twill-bench etcd): a real etcd cluster of members
# in namespaces, openssl for the TLS variant's certificates made at test time, curl for etcd's JSON
# gateway and its /metrics.
APT_PKGS += etcd-server etcd-client openssl curl
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

# Fuzzing (make fuzz): seconds per target and the targets (fuzz/Cargo.toml).
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := config_bridge_host_gw config_routed_veth config_host_local cni_args subnet_env \
  cluster_view result_version
FUZZ_WORK := $(CURDIR)/target/fuzz-corpus

.PHONY: all deps build hot-functions clients test unit conformance vm lint fuzz bench install install-conflists demo clean

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
	@command -v cargo-fuzz >/dev/null || { echo "installing cargo-fuzz"; $(CARGO) install --locked cargo-fuzz; }

## build: release binaries of every plugin and the bench harness.
# relocation-model=static: a plain static executable, not a static PIE, so the start-up of every
# plugin call skips the self-relocation and the copy-on-write faults it causes (about 0.1 ms per
# exec measured here). The Go reference plugins are not position-independent either.
#
# The functions a runtime's calls run are laid out side by side: the link goes through
# scripts/link-ordered.sh, which gives rustup's lld (rust-lld) the list
# scripts/hot-functions.order (made by `make hot-functions`; v0 mangling names generics with
# their types). A call's peak RSS is mostly text, and the kernel maps 64 KiB of file pages
# around every fault, so scattered hot code maps nearly the whole binary (bridge-host-gw's
# ADD: 1.3 MiB; laid out: 0.8 MiB; docs/bench.md). Without rust-lld the binaries link as
# before, unordered.
GCC_LD := $(shell PATH="$(PATH)" rustc --print sysroot 2>/dev/null)/lib/rustlib/$(shell PATH="$(PATH)" rustc -vV 2>/dev/null | sed -n 's/^host: //p')/bin/gcc-ld
LINK_ORDERED := $(if $(wildcard $(GCC_LD)/ld.lld),CARGO_TARGET_$(TRIPLE_ENV)_LINKER=$(CURDIR)/scripts/link-ordered.sh \
  TWILL_GCC_LD=$(GCC_LD) TWILL_HOT_FUNCTIONS=$(CURDIR)/scripts/hot-functions.order)
build:
	$(LINK_ORDERED) CARGO_TARGET_$(TRIPLE_ENV)_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static \
	  -C symbol-mangling-version=v0" \
	  $(CARGO) build --release --target $(TRIPLE) --workspace --bins

## hot-functions: trace the plugins' calls (namespaces only) and rewrite scripts/hot-functions.order.
# The next `make build` must relink: cargo does not track the list, so the binaries' roots are touched.
hot-functions:
	scripts/hot-functions.sh
	touch plugins/*/src/main.rs bench/src/bare_add.rs

## clients: the libcni driver (Go, Debian's libcni, offline GOPATH build) into $(CLIENTS).
clients:
	@mkdir -p $(CLIENTS)
	cd conformance/clients/libcni && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off \
	  GOFLAGS= GOCACHE=$(CLIENTS)/go-cache go build -o $(CLIENTS)/twill-libcni .

## test: lint, unit tests, kernel integration tests and the black-box conformance suite, which
## includes the real-client suites (libcni, podman, containerd CRI) and the VM test (root).
test: deps lint build unit conformance fuzz

unit:
	$(CARGO) test --workspace --exclude conformance

conformance: build clients
	$(CARGO) test -p conformance

## vm: only the VM test (every data plane on Debian's stock cloud kernel, under qemu TCG).
vm: deps build
	$(CARGO) test -p conformance --test vm

## fuzz: every cargo-fuzz target of fuzz/ (config parsing of each plugin, CNI_ARGS, subnet.env,
## the cluster view, result version conversion) for FUZZ_SECONDS each, from the committed seed
## corpus (fuzz/corpus, read only; new inputs go to target/fuzz-corpus). cargo-fuzz needs
## nightly features: RUSTC_BOOTSTRAP=1 unlocks them on the stable toolchain. A panic fails.
fuzz:
	@mkdir -p $(FUZZ_WORK)
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build -O
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_WORK)/$$t; \
	  echo "fuzz $$t for $(FUZZ_SECONDS) s"; \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t $(FUZZ_WORK)/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
	    >$(FUZZ_WORK)/$$t.log 2>&1) || { tail -40 $(FUZZ_WORK)/$$t.log; exit 1; }; \
	  grep -E '^stat::number_of_executed_units' $(FUZZ_WORK)/$$t.log || true; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: twill vs the reference Go plugins (Debian containernetworking-plugins), medians and ratios.
bench: deps build
	$(RELEASE)/twill-bench all

## install: plugin binaries into $(DESTDIR)$(PREFIX); twilld into $(DESTDIR)$(SBINDIR) with
## twilld.service, /etc/default/twilld and an example config under $(DOCDIR); with CONFLISTS=1
## also the sample conflists.
install: build
	install -d $(DESTDIR)$(PREFIX)
	for b in $(BINS); do [ -x $(RELEASE)/$$b ] && install -m 0755 $(RELEASE)/$$b $(DESTDIR)$(PREFIX)/$$b; done; true
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/default $(DESTDIR)$(DOCDIR)
	for b in $(DAEMONS); do install -m 0755 $(RELEASE)/$$b $(DESTDIR)$(SBINDIR)/$$b; done
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' dist/twilld.service > $(DESTDIR)$(UNITDIR)/twilld.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/twilld.service
	[ -e $(DESTDIR)/etc/default/twilld ] || install -m 0644 dist/twilld.default $(DESTDIR)/etc/default/twilld
	install -m 0644 dist/10-pods.conflist.example docs/twilld.md $(DESTDIR)$(DOCDIR)/
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
