# Everyday recipes. A fresh machine has no `just`: the README gives the plain
# cargo commands these run.

# Run the gateway on the embedded demo provider (loopback, local dev key).
run:
    cargo run --release --bin gatewayz

# Every test of the workspace.
test:
    cargo test --workspace --all-features

# Format and lint checks, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings

# Benchmark Gatewayz against a direct call to a local upstream; writes
# docs/benchmarks/latest.md and latest.json (docs/benchmarks.md explains it).
# About 3 minutes of measurement after the release build.
bench:
    cargo build --release --bin gatewayz --bin gatewayz-upstream --bin gatewayz-bench && target/release/gatewayz-bench --out docs/benchmarks

# Everything CI does.
ci:
    bash .ci/run
