#!/usr/bin/env bash
# `make vm-test`: the .deb on a real Debian 12 system with systemd, booted under QEMU.
#
# A minimal bookworm root (debootstrap, with systemd, a kernel and its initramfs, ssh and
# the GStreamer plugins the package depends on) is built once and cached as an ext4 image
# in $TILLGATE_VM_CACHE; each run boots a copy of it with qemu-system-x86_64 under TCG
# (KVM guests hang on these machines: ../shared/TOOLCHAIN.md), installs the package and
# checks from the host, through forwarded loopback ports:
#   1. the service is active after install, and decisions come back over HTTP;
#   2. `systemd-analyze security tillgate` exposure is at most 2.5;
#   3. `systemctl reload` (SIGHUP) reloads the rules;
#   4. a SIGSTOPped agent is killed by the watchdog and restarted;
#   5. a hard power-off of the VM under load (qemu killed), then boot: every transaction
#      that was answered is in the journal and `PRAGMA integrity_check` says ok.
# A qemu kill loses what the guest kernel had not yet written to its virtual disk, as a
# power cut does; what the guest wrote reaches the image (the host does not crash).
#
# usage: scripts/vm-test.sh target/debian/tillgate_<version>_amd64.deb
set -euo pipefail

deb=$(realpath "${1:?usage: vm-test.sh tillgate_<version>_amd64.deb}")
cache=${TILLGATE_VM_CACHE:-/var/cache/tillgate-vm}
# Bump when the guest's package list or setup changes: the cached image is rebuilt.
image=$cache/bookworm-5.img
key=$cache/id_ed25519
mirror=${TILLGATE_VM_MIRROR:-http://deb.debian.org/debian}
packages=systemd,systemd-sysv,dbus,udev,kmod,initramfs-tools,linux-image-amd64,openssh-server,sqlite3,procps,ca-certificates
# The package's dependencies beyond the base system, installed with apt in the root
# (debootstrap's own resolver cannot pick providers of virtual packages they need).
extra=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)

work=$(mktemp -d /tmp/tillgate-vm.XXXXXX)
qemu_pid=
started=$(date +%s)
log() { echo "vm-test [$(($(date +%s) - started))s]: $*" >&2; }
fail() {
  echo "vm-test: FAIL: $*" >&2
  [ -f "$work/console.log" ] && { echo "--- last console lines:" >&2; tail -n 30 "$work/console.log" >&2; }
  exit 1
}
cleanup() {
  [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

need=()
for tool in debootstrap:debootstrap qemu-system-x86_64:qemu-system-x86 ssh:openssh-client mkfs.ext4:e2fsprogs curl:curl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

build_image() {
  local root=$cache/root.tmp
  log "building the guest image (once; cached as $image)"
  mkdir -p "$cache"
  rm -rf "$root"
  local ok=
  for i in 1 2 3; do
    if debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 &&
      cp /etc/resolv.conf "$root/etc/resolv.conf" && mount -t proc proc "$root/proc" &&
      { chroot "$root" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${extra[*]}" >>"$cache/debootstrap.log" 2>&1; r=$?; umount "$root/proc"; [ $r -eq 0 ]; }; then
      ok=1
      break
    fi
    log "debootstrap failed (try $i; mirrors sometimes sync mid-download), retrying: $(tail -n 3 "$cache/debootstrap.log" | tr '\n' ' ')"
    mountpoint -q "$root/proc" && umount "$root/proc"
    rm -rf "$root"
    sleep $((i * 10))
  done
  [ -n "$ok" ] || fail "debootstrap: see $cache/debootstrap.log"
  chroot "$root" apt-get clean
  echo tillgate-vm >"$root/etc/hostname"
  echo "/dev/vda / ext4 defaults 0 1" >"$root/etc/fstab"
  mkdir -p "$root/etc/systemd/network"
  printf '[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/20-eth0.network"
  chroot "$root" systemctl enable systemd-networkd ssh >/dev/null 2>&1
  [ -f "$key" ] || ssh-keygen -q -t ed25519 -N "" -f "$key"
  install -d -m 700 "$root/root/.ssh"
  install -m 600 "$key.pub" "$root/root/.ssh/authorized_keys"
  cp "$root"/boot/vmlinuz-* "$cache/vmlinuz"
  cp "$root"/boot/initrd.img-* "$cache/initrd.img"
  mkfs.ext4 -q -F -d "$root" -L root "$image.tmp" 3G
  mv "$image.tmp" "$image"
  rm -rf "$root"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ssh_port=$(free_port)
http_port=$(free_port)
vm() {
  ssh -i "$key" -p "$ssh_port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes root@127.0.0.1 "$@"
}

boot() {
  : >"$work/console.log"
  qemu-system-x86_64 -accel tcg,thread=multi -m 1536 -smp 2 -display none -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.show_status=0" \
    -drive "file=$work/disk.img,if=virtio,format=raw,cache=writeback" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$http_port-:8080" \
    -device virtio-net-pci,netdev=n0 -serial "file:$work/console.log" &
  qemu_pid=$!
  local deadline=$(($(date +%s) + 300))
  until vm true 2>/dev/null; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "qemu exited during boot"
    [ "$(date +%s)" -lt "$deadline" ] || fail "no ssh within 300 s of boot"
    sleep 2
  done
}

wait_active() {
  local deadline=$(($(date +%s) + ${1:-120}))
  until [ "$(vm systemctl is-active tillgate || true)" = active ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "tillgate not active: $(vm systemctl status tillgate --no-pager || true)"
    sleep 1
  done
}

token=vm-test-token-0123456789
post() { # txn_id → the HTTP status; the answer goes to $work/answer
  curl -s -o "$work/answer" -w '%{http_code}' --max-time 10 -H "authorization: Bearer $token" \
    -H 'content-type: application/json' "http://127.0.0.1:$http_port/v1/transactions" \
    -d "{\"txn_id\":\"$1\",\"store_id\":\"store-vm\",\"terminal_id\":\"till-${2:-1}\",\"occurred_at\":\"$(date -u +%Y-%m-%dT%H:%M:%S.000Z)\",\"type\":\"sale\",\"total_minor\":${3:-1250},\"currency\":\"USD\",\"card\":{\"token\":\"${4:-tok_$1}\",\"bin\":\"411111\",\"last4\":\"1111\",\"entry_mode\":\"chip\"}}" || true
}

[ -f "$image" ] || build_image
log "booting a copy of $(basename "$image") under TCG"
cp --sparse=always "$image" "$work/disk.img"
boot
log "booted; installing $(basename "$deb")"
vm mkdir -p /tmp/pkg
scp -q -i "$key" -P "$ssh_port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
  "$deb" root@127.0.0.1:/tmp/pkg/ || fail "scp"
vm "dpkg -i /tmp/pkg/$(basename "$deb")" >"$work/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$work/dpkg.log")"
wait_active 120
log "1/5 active after install; opening the listener to the host (with a token)"
vm "printf '%s\n' '$token' >/etc/tillgate/http-token && chgrp tillgate /etc/tillgate/http-token && chmod 640 /etc/tillgate/http-token \
  && sed -i 's|^listen = .*|listen = \"0.0.0.0:8080\"\ntoken = { file = \"/etc/tillgate/http-token\" }|' /etc/tillgate/tillgate.toml \
  && tillgate check-config /etc/tillgate/tillgate.toml && systemctl restart tillgate" >"$work/config.log" 2>&1 ||
  fail "reconfigure: $(cat "$work/config.log")"
wait_active 60
code=$(post vm-1)
[ "$code" = 200 ] || fail "POST answered $code: $(cat "$work/answer")"
grep -q '"decision":"allow"' "$work/answer" || fail "no allow decision: $(cat "$work/answer")"
code=$(post vm-2 2 900 tok_stolen_0001)
grep -q '"decision":"block"' "$work/answer" || fail "a stolen card was not blocked ($code): $(cat "$work/answer")"
log "1/5 decisions over HTTP from the host: allow and block"

exposure=$(vm systemd-analyze security tillgate --no-pager | sed -n 's/.*Overall exposure level for tillgate.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security gave no exposure"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.5) }' || fail "exposure $exposure > 2.5"
log "2/5 systemd-analyze security: exposure $exposure (goal ≤ 2.5)"

vm systemctl reload tillgate
sleep 3
vm "journalctl -u tillgate --no-pager" | grep -q "SIGHUP: rules reloaded" || fail "no reload in the journal"
wait_active 30
log "3/5 systemctl reload: rules reloaded, still active"

pid=$(vm systemctl show -p MainPID --value tillgate)
restarts=$(vm systemctl show -p NRestarts --value tillgate)
vm kill -STOP "$pid"
deadline=$(($(date +%s) + 120))
until now=$(vm systemctl show -p MainPID --value tillgate) && [ "$now" != "$pid" ] && [ "$now" != 0 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the stopped agent was not restarted within 120 s"
  sleep 2
done
wait_active 60
[ "$(vm systemctl show -p NRestarts --value tillgate)" -gt "$restarts" ] || fail "NRestarts did not grow"
vm "journalctl -u tillgate --no-pager" | grep -qi "watchdog timeout" || fail "no watchdog timeout in the journal"
log "4/5 SIGSTOP: watchdog timeout, restarted as PID $now"

: >"$work/acked"
(
  i=0
  while :; do
    i=$((i + 1))
    code=$(post "load-$i" $((i % 8)) $((100 + i % 5000)))
    [ "$code" = 200 ] && echo "load-$i" >>"$work/acked"
    [ "$code" = 000 ] && [ ! -e "/proc/$qemu_pid" ] && break
  done
) &
loader=$!
sleep 12
log "5/5 power-off during load ($(wc -l <"$work/acked") answered so far)"
kill -9 "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
wait "$loader" 2>/dev/null || true
qemu_pid=
acked=$(wc -l <"$work/acked")
[ "$acked" -gt 20 ] || fail "only $acked transactions answered before the power-off"
boot
wait_active 120
check=$(vm "sqlite3 -readonly /var/lib/tillgate/journal.db 'PRAGMA integrity_check'")
[ "$check" = ok ] || fail "integrity_check: $check"
vm "sqlite3 -readonly /var/lib/tillgate/journal.db \"SELECT txn_id FROM txn_ids WHERE txn_id LIKE 'load-%'\"" | sort >"$work/present"
missing=$(sort "$work/acked" | comm -23 - "$work/present" | wc -l)
[ "$missing" -eq 0 ] || fail "$missing of $acked answered transactions missing after the power-off"
log "5/5 after power-off and boot: integrity_check ok, all $acked answered transactions present"
log "passed in $(($(date +%s) - started)) s"
