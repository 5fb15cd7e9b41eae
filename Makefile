# Meridian: the two commands of the README, plus helpers.
#   make demo   builds Meridian and runs the local multi-region lab
#   make test   installs what the build and tests need, then runs every test, fmt and clippy

SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/meridian

.PHONY: demo test deps build lint fmt bench

# Debian packages the build and the tests need: cmake builds pingora's zlib-ng; prometheus
# brings promtool, which the metrics tests run; bind9-dnsutils brings dig for the DNS tests;
# openssl (s_client) offers the old TLS versions the gateway must refuse.
DEB_PACKAGES := cmake prometheus bind9-dnsutils openssl

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v sudo >/dev/null; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing" >&2; exit 1; fi; \
	fi
	@# kubernetes-validate (PyPI) checks deploy/multi-region's manifests against the Kubernetes schemas.
	@python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate

build: deps
	$(CARGO) build --workspace

test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace --all-targets

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

demo: build
	$(BIN) lab
