# Debian 12's Rust (1.63) is older than the 1.85 registry-rubber needs: take
# rustup's. The C compiler builds the bundled SQLite and ring.
apt-get install -y gcc
curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
. "$HOME/.cargo/env"
cargo build --release --locked
install -m 0755 target/release/registry-rubber /usr/local/bin/registry-rubber
