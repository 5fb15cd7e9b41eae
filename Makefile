# Meridian: the two commands of the README, plus helpers.
#   make demo   builds Meridian and runs the local multi-region lab
#   make test   installs what the build and tests need, then runs fmt, clippy and every test

SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/meridian
# Test tools from PyPI live in a virtual environment of the checkout: Debian's own python3 refuses
# system-wide pip installs (PEP 668), and nothing outside the checkout is touched.
VENV := .venv
PY_TOOLS := kubernetes-validate

.PHONY: demo test deps test-deps build lint fmt bench

# Debian packages, installed only when missing: with apt-get as root, else through sudo.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v sudo >/dev/null; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing" >&2; exit 1; fi; \
	fi
endef

# What the build needs: cmake builds pingora's zlib-ng.
deps:
	$(call apt_install,cmake)

# What the tests need beyond the build: promtool (prometheus) for the metrics lint, dig
# (bind9-dnsutils) for the DNS tests, openssl s_client for the TLS version tests, python3-venv for
# the tools from PyPI (kubernetes-validate checks deploy/multi-region's manifests), nginx for the
# mutation harness (the same mutated requests go to it and to the gateway), chromium for the status
# pages (a headless browser loads them, clicks their buttons and takes the README's screenshot).
test-deps: deps
	$(call apt_install,prometheus bind9-dnsutils openssl python3-venv nginx chromium)
	@[ -x $(VENV)/bin/python3 ] || python3 -m venv $(VENV)
	@$(VENV)/bin/python3 -c 'import kubernetes_validate' 2>/dev/null || \
	  $(VENV)/bin/python3 -m pip install --quiet --disable-pip-version-check $(PY_TOOLS)

build: deps
	$(CARGO) build --workspace

test: test-deps
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
