#!/usr/bin/env bash
# The cross image (packaging/cross/Dockerfile.aarch64) cannot be built here (no Docker),
# so it is kept in step with the recipe that is: every arm64 package
# scripts/install-arm64-deps.sh installs must be installed by the image too, and the
# image must set the runner and the pkg-config path `make arm64` uses.
set -euo pipefail
cd "$(dirname "$0")/.."
dockerfile=packaging/cross/Dockerfile.aarch64
recipe=scripts/install-arm64-deps.sh
# Debian's Rust (libstd-rust-*) is the one exception: cross brings the user's rustup
# toolchain and its aarch64 standard library into the container.
arm64_packages() { grep -oE '[a-z0-9][a-z0-9.+-]*:arm64' "$1" | grep -v '^libstd-rust-' | sort -u; }
missing=$(comm -23 <(arm64_packages "$recipe") <(arm64_packages "$dockerfile"))
if [ -n "$missing" ]; then
  echo "check-cross: $dockerfile lacks what $recipe installs: $missing" >&2
  exit 1
fi
for line in 'CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static' \
            'PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig'; do
  grep -qF "$line" "$dockerfile" || { echo "check-cross: $dockerfile does not set $line" >&2; exit 1; }
done
grep -qF "dockerfile = \"$dockerfile\"" Cross.toml || { echo "check-cross: Cross.toml does not use $dockerfile" >&2; exit 1; }
echo "check-cross: $dockerfile installs the $(arm64_packages "$recipe" | wc -l) arm64 packages of $recipe"
