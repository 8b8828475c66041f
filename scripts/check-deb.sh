#!/usr/bin/env bash
# Checks a built tillgate .deb (amd64 or arm64): what it installs, which files are conffiles, what it
# depends on, that the binary runs, and that systemd accepts the unit.
set -euo pipefail
deb="$1"
fail() { echo "check-deb: $*" >&2; exit 1; }
[ -f "$deb" ] || fail "no package at $deb"

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/tillgate ./etc/tillgate/tillgate.toml ./etc/tillgate/rules/30-velocity.toml \
         ./etc/tillgate/rules/lists/denied_bins.txt ./usr/lib/sysusers.d/tillgate.conf \
         ./usr/lib/systemd/system/tillgate.service ./usr/share/doc/tillgate/README.md \
         ./usr/share/tillgate/systemd/v4l2-cameras.conf; do
  grep -qx "$f" <<<"$contents" || fail "$f is not in the package"
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
dpkg-deb -e "$deb" "$scratch/DEBIAN"
grep -qx /etc/tillgate/tillgate.toml "$scratch/DEBIAN/conffiles" || fail "tillgate.toml is not a conffile"
grep -qx /etc/tillgate/rules/20-amounts.toml "$scratch/DEBIAN/conffiles" || fail "the rule pack is not conffiles"
depends=$(dpkg-deb -f "$deb" Depends)
grep -q libc6 <<<"$depends" || fail "Depends ($depends) does not name libc6"
grep -q ca-certificates <<<"$depends" || fail "Depends ($depends) does not name ca-certificates (the trust store of every HTTPS client)"
for dep in libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad; do
  grep -q "$dep" <<<"$depends" || fail "Depends ($depends) does not name $dep (cameras)"
done
grep -q systemd-sysusers "$scratch/DEBIAN/postinst" || fail "postinst does not create the user"
grep -q "systemctl" "$scratch/DEBIAN/postinst" || fail "postinst does not enable the unit"

dpkg-deb -x "$deb" "$scratch/root"
# $TILLGATE_RUNNER runs a foreign-architecture binary (qemu-aarch64-static).
run=(${TILLGATE_RUNNER:+"$TILLGATE_RUNNER"} "$scratch/root/usr/bin/tillgate")
"${run[@]}" --version
# The packaged config must pass the packaged binary's own check (rules relative to it).
"${run[@]}" check-config "$scratch/root/etc/tillgate/tillgate.toml"
# systemd's own reading of the unit, pointed at the unpacked binary.
if command -v systemd-analyze >/dev/null 2>&1; then
  sed "s|/usr/bin/tillgate|$scratch/root/usr/bin/tillgate|g" \
    "$scratch/root/usr/lib/systemd/system/tillgate.service" >"$scratch/tillgate.service"
  systemd-analyze verify "$scratch/tillgate.service"
  # The hardening, as systemd scores it (0 = fully locked down, 10 = fully exposed).
  exposure=$(systemd-analyze security --offline=true "$scratch/tillgate.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for tillgate.service: \([0-9.]*\).*/\1/p')
  [ -n "$exposure" ] || fail "systemd-analyze security printed no exposure level"
  awk -v e="$exposure" 'BEGIN { exit !(e <= 2.5) }' || fail "exposure $exposure is above 2.5"
  echo "check-deb: systemd-analyze security exposure $exposure"
  # The drop-in for V4L2 cameras, as systemd reads it beside the unit.
  mkdir -p "$scratch/tillgate.service.d"
  cp "$scratch/root/usr/share/tillgate/systemd/v4l2-cameras.conf" "$scratch/tillgate.service.d/"
  systemd-analyze verify "$scratch/tillgate.service"
  with_cameras=$(systemd-analyze security --offline=true "$scratch/tillgate.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for tillgate.service: \([0-9.]*\).*/\1/p')
  [ -n "$with_cameras" ] && [ "$with_cameras" != "$exposure" ] || fail "systemd did not read the v4l2-cameras drop-in"
  awk -v e="$with_cameras" 'BEGIN { exit !(e <= 2.5) }' || fail "exposure with the drop-in $with_cameras is above 2.5"
  echo "check-deb: with the v4l2-cameras drop-in (PrivateDevices=no, /dev/video* only), exposure $with_cameras"
fi
echo "check-deb: $(basename "$deb") ok ($(du -h "$deb" | cut -f1), Depends: $depends)"
