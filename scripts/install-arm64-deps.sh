#!/usr/bin/env bash
# What `make arm64` needs: Debian's Rust with the arm64 standard library, the aarch64
# cross linker and libc, and qemu-user to run aarch64 binaries here
# (../shared/TOOLCHAIN.md has the checked recipe). Idempotent.
set -euo pipefail
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

need=()
for p in rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
         libc6:arm64 qemu-user-static \
         libgstreamer1.0-dev:arm64 libgstreamer-plugins-base1.0-0:arm64 gstreamer1.0-plugins-base:arm64; do
  have_pkg "$p" || need+=("$p")
done
# gstreamer-rs links gstreamer-app/-base/-video through pkg-config: the arm64 .pc files
# and .so links come from libgstreamer-plugins-base1.0-dev:arm64, which is not
# co-installable with the amd64 one; only its lib folder is needed (TOOLCHAIN.md).
gst_base_pc=/usr/lib/aarch64-linux-gnu/pkgconfig/gstreamer-app-1.0.pc
install_gst_base_dev() {
  local scratch
  scratch=$(mktemp -d)
  (cd "$scratch" && apt-get download -qq libgstreamer-plugins-base1.0-dev:arm64 &&
    dpkg -x libgstreamer-plugins-base1.0-dev_*_arm64.deb x &&
    cp -a x/usr/lib/aarch64-linux-gnu/. /usr/lib/aarch64-linux-gnu/)
  rm -rf "$scratch"
}
if [ "${#need[@]}" -eq 0 ]; then
  [ -e "$gst_base_pc" ] || install_gst_base_dev
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-arm64-deps: need root to install: ${need[*]}" >&2
  exit 1
fi
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
export DEBIAN_FRONTEND=noninteractive
# Mirrors sometimes serve an index mid-sync; retry, then check the packages are there.
for i in 1 2 3 4; do
  apt-get update -qq && apt-cache show libstd-rust-web-dev:arm64 >/dev/null 2>&1 && break
  sleep $((i * 10))
done
apt-get install -y -qq --no-install-recommends "${need[@]}"
[ -e "$gst_base_pc" ] || install_gst_base_dev
