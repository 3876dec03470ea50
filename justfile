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

# Everything CI does.
ci:
    bash .ci/run
