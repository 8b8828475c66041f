#!/usr/bin/env bash
# Installs what building, testing and the demo need, and nothing that is already there.
# Idempotent; safe to run on every `make`. Debian 12 (bookworm) is the reference system.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

have cc || need_apt+=(build-essential)
have pkg-config || need_apt+=(pkg-config)
# Tests and the MQTT benchmark run a real broker; TLS tests make their certificates
# with openssl; the demo publishes with mosquitto_pub.
have mosquitto || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
have mosquitto_pub || need_apt+=(mosquitto-clients)
have openssl || need_apt+=(openssl)
# Kinesis tests: kinesis-local runs on node; boto3 and aws-kinesis-agg (the independent
# reader) in a Python virtual environment.
have node || need_apt+=(nodejs)
have npm || need_apt+=(npm)
have python3 || need_apt+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
# Cameras (the agent's `video` feature): GStreamer to build and run; the test camera
# (GStreamer's RTSP server from Debian's python3-gi) and ffmpeg to check the video.
pkg-config --exists gstreamer-1.0 gstreamer-app-1.0 2>/dev/null ||
  need_apt+=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
for pkg in gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gstreamer1.0-tools gir1.2-gst-rtsp-server-1.0 \
  python3-gi ffmpeg; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
# The status page is tested in a real browser: headless Chromium, driven over the
# DevTools protocol from Python (python3-websocket).
for pkg in chromium python3-websocket; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
# PyFlink's local mini-cluster (the chain-rule tests) runs on Java 17.
have java || need_apt+=(openjdk-17-jre-headless)
# The workspace needs Rust >= 1.94 (aws-sdk-kinesis' minimum). Debian 12's own `cargo` is older; its `rustc-web`
# and `cargo-web` packages are current (see ../shared/TOOLCHAIN.md).
if ! have cargo; then
  need_apt+=(rustc-web cargo-web)
fi

if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Debian mirrors sometimes serve an index mid-sync; retry before giving up.
  for i in 1 2 3; do apt-get update -qq && break || sleep $((i * 5)); done
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

rust_version=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n' 1.94.0 "$rust_version" | sort -V | head -n1)" != 1.94.0 ]; then
  echo "install-deps: rustc $rust_version is older than 1.94; install rustc-web/cargo-web or rustup" >&2
  exit 1
fi

# Test tools from npm and PyPI, pinned, outside the clone so CI runs reuse them.
tools="${TILLGATE_TOOLS:-/var/cache/tillgate-tools}"
mkdir -p "$tools"
if [ ! -f "$tools/node_modules/kinesis-local/main.js" ]; then
  echo "install-deps: installing kinesis-local into $tools"
  npm install --prefix "$tools" --no-audit --no-fund --loglevel=error kinesis-local@0.6.2
fi
if ! "$tools/venv/bin/python" -c 'import aws_kinesis_agg, boto3, six' >/dev/null 2>&1; then
  echo "install-deps: installing boto3 and aws-kinesis-agg into $tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    'boto3>=1.34,<2' 'aws-kinesis-agg==1.2.3' 'six>=1.16'
fi
# The cloud stack's tests (cloud/, tests/e2e/tests/cloud.rs): the AWS emulator moto and
# the template linters cfn-lint and checkov, in their own environment (checkov pins
# its own boto3 and friends).
if ! "$tools/cloud-venv/bin/python" -c 'import moto, cfnlint, checkov, boto3' >/dev/null 2>&1; then
  echo "install-deps: installing moto, cfn-lint and checkov into $tools/cloud-venv"
  python3 -m venv "$tools/cloud-venv"
  "$tools/cloud-venv/bin/pip" install --quiet --disable-pip-version-check \
    'moto[server]==5.2.5' 'cfn-lint==1.58.0' 'checkov==3.3.30'
fi
# Chain rules on Flink itself (tests/e2e/tests/cloud.rs): PyFlink 2.3, whose local
# mini-cluster runs on the machine's Java 17 (about 850 MB installed).
if ! "$tools/flink-venv/bin/python" -c 'import pyflink' >/dev/null 2>&1; then
  echo "install-deps: installing apache-flink into $tools/flink-venv"
  python3 -m venv "$tools/flink-venv"
  "$tools/flink-venv/bin/pip" install --quiet --disable-pip-version-check 'apache-flink==2.3.0'
fi
