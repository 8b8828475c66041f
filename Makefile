# tillgate — the two commands are `make demo` and `make test`.
CARGO ?= cargo
TARGET := $(or $(CARGO_TARGET_DIR),target)

.PHONY: deps build demo test lint bench deb clean

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --release -p tillgate

## The agent on embedded defaults, driven by simulated terminals with injected fraud.
demo: build
	$(TARGET)/release/tillgate demo

## Every test: unit, property and end-to-end (the real binary as a process).
test: deps
	$(CARGO) build -p tillgate --bins
	$(CARGO) test --workspace

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Figures for BENCHMARKS.md: prints and saves bench-results/{foundation,rules,mqtt,kinesis}.json,
## and the criterion per-transaction rule costs (target/criterion/).
bench: deps
	$(CARGO) build --release -p tillgate -p tillgate-testkit --bins
	$(TARGET)/release/tillgate-bench --bin $(TARGET)/release/tillgate --out bench-results/foundation.json
	$(TARGET)/release/tillgate-bench --bin $(TARGET)/release/tillgate --suite rules --out bench-results/rules.json
	$(TARGET)/release/tillgate-bench --bin $(TARGET)/release/tillgate --suite mqtt --out bench-results/mqtt.json
	$(TARGET)/release/tillgate-bench --bin $(TARGET)/release/tillgate --suite kinesis --out bench-results/kinesis.json
	$(CARGO) bench -p tillgate --bench rules

## The Debian package (amd64): target/debian/tillgate_<version>_amd64.deb, then checked
## (contents, conffiles, dependencies, the unit) by scripts/check-deb.sh.
deb: deps
	$(CARGO) build --release -p tillgate
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked --version 3.8.0
	$(CARGO) deb -p tillgate --no-build --strip --output $(TARGET)/debian/
	scripts/check-deb.sh $(TARGET)/debian/tillgate_*_amd64.deb

clean:
	$(CARGO) clean
