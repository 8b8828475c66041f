#!/usr/bin/env bash
# Packages a cross-built Lambda program for provided.al2023 on arm64: checks that it is
# an aarch64 ELF that the runtime's glibc (2.34) can load, then zips it as `bootstrap`
# (executable, stripped) into OUT.
#
# Why not cargo-lambda: it cross-compiles through Zig, which this machine's registries
# do not carry; Debian's Rust cross-builds the agent already, and the glibc check below
# is what Zig's pinned glibc would otherwise guarantee.
#
# usage: scripts/lambda-package.sh PROGRAM OUT.zip
set -euo pipefail
program=$1
out=$2
runtime_glibc=2.34

file -b "$program" | grep -q "ARM aarch64" || { echo "lambda-package: $program is not an aarch64 ELF" >&2; exit 1; }
newest=$(aarch64-linux-gnu-objdump -T "$program" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
if [ "$(printf '%s\n' "$newest" "$runtime_glibc" | sort -V | tail -n 1)" != "$runtime_glibc" ]; then
  echo "lambda-package: $program needs glibc $newest; provided.al2023 has $runtime_glibc" >&2
  aarch64-linux-gnu-objdump -T "$program" | grep "GLIBC_$newest" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
aarch64-linux-gnu-strip -o "$stripped" "$program"
python3 - "$stripped" "$out" <<'PY'
import os, stat, sys, zipfile
program, out = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap")
info.external_attr = (stat.S_IFREG | 0o755) << 16
info.compress_type = zipfile.ZIP_DEFLATED
with open(program, "rb") as f, zipfile.ZipFile(out, "w") as z:
    z.writestr(info, f.read())
PY
echo "lambda-package: $out ($(du -h "$out" | cut -f1); needs glibc $newest)"
