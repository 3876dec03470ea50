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
# About 4.5 minutes of measurement after the release build (key limits included).
bench:
    cargo build --release --bin gatewayz --bin gatewayz-upstream --bin gatewayz-bench && target/release/gatewayz-bench --out docs/benchmarks

# Reliability soak (issue #12): 10 minutes of mixed traffic with injected
# upstream failures through the release gateway at 200 req/s; fails on an
# unexpected answer or RSS growth over 1.5x after warm-up, and writes the
# result into docs/reliability.md (which explains it).
soak:
    cargo build --release --bin gatewayz --bin gatewayz-upstream --bin gatewayz-bench && target/release/gatewayz-bench --reliability-soak 600 --report docs/reliability.md

# Overload soak (issue #19): twice the sustainable rate for 2 minutes through
# the release gateway with a 32-request in-flight limit; fails when admitted
# p99 exceeds 2x its unloaded value, refusals are slow, an answer is neither
# a 200 nor a 503 `overloaded`, or RSS grows, and writes the result into
# docs/reliability.md (which explains it).
overload:
    cargo build --release --bin gatewayz --bin gatewayz-upstream --bin gatewayz-bench && target/release/gatewayz-bench --overload-soak 120 --report docs/reliability.md

# Everything CI does.
ci:
    bash .ci/run
