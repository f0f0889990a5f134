#!/usr/bin/env bash
# Builds the tiny guest that the compute tests boot under QEMU/TCG: Debian's
# own kernel (the package `linux-image-amd64` depends on, unpacked with
# dpkg-deb) and a busybox-static initramfs whose /init loads the few virtio
# modules it needs, mounts the config drive (ISO 9660 labelled config-2), runs
# the user data with its output on the serial console, configures eth0 by DHCP
# from QEMU's user network, reads its instance id and user data from the
# metadata service at 169.254.169.254, answers TCP connections on port 22 with
# an SSH-style banner, and then waits for the ACPI power button (QMP
# `system_powerdown`) to power off. Ctrl-Alt-Del (QMP `send-key`, Nuage's
# graceful reboot) reboots it, unless the user data created
# /tmp/ignore-ctrl-alt-del (to test the hard-reset fallback).
#
#   scripts/compute/build-tiny-guest.sh OUTDIR
#
# Writes OUTDIR/vmlinux (uncompressed ELF, booted by QEMU through PVH; about
# twice as fast as a bzImage through SeaBIOS under TCG), OUTDIR/vmlinuz (the
# bzImage, kept as a fallback), OUTDIR/initrd.gz and OUTDIR/guest.env (the
# kernel release and the command line to boot with).
#
# Idempotent: the kernel package and everything derived from it are cached
# under $NUAGE_GUEST_CACHE (default ~/.cache/nuage-guest), keyed by the kernel
# package name and a hash of this script, so a second run copies files only.
#
# Needs: apt-get, dpkg-deb, python3, cpio, gzip, xz, busybox-static
# (scripts/install-test-deps.sh installs them).
set -euo pipefail

out="${1:?usage: build-tiny-guest.sh OUTDIR}"
cache="${NUAGE_GUEST_CACHE:-$HOME/.cache/nuage-guest}"
log() { printf 'build-tiny-guest: %s\n' "$*" >&2; }

busybox_bin=/bin/busybox
# busybox-static: the initramfs has no libc, so a dynamic busybox cannot run.
if [[ ! -x "$busybox_bin" ]] || ldd "$busybox_bin" >/dev/null 2>&1; then
  log "$busybox_bin is missing or not static: install busybox-static" >&2
  exit 1
fi
for tool in apt-get apt-cache dpkg-deb python3 cpio gzip xz; do
  command -v "$tool" >/dev/null 2>&1 || { log "missing $tool"; exit 1; }
done

mkdir -p "$cache" "$out"
script_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

# --- the kernel package ------------------------------------------------------
# The metapackage names the real kernel package; ask apt which one, without
# downloading anything when the answer is already cached.
kernel_pkg="$(apt-cache depends linux-image-amd64 2>/dev/null |
  awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [[ -z "$kernel_pkg" ]]; then
  # apt lists missing (fresh machine): refresh them once.
  apt-get update -qq >/dev/null 2>&1 || true
  kernel_pkg="$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
fi
if [[ -z "$kernel_pkg" ]]; then
  # Offline with no lists: fall back to whatever was cached before.
  kernel_pkg="$(cat "$cache/last-kernel-pkg" 2>/dev/null || true)"
fi
[[ -n "$kernel_pkg" ]] || { log "cannot resolve linux-image-amd64's kernel package"; exit 1; }
release="${kernel_pkg#linux-image-}"

build="$cache/$kernel_pkg-$script_hash"
if [[ ! -f "$build/done" ]]; then
  log "building guest for $kernel_pkg in $build"
  rm -rf "$build"
  mkdir -p "$build/deb"
  deb="$(compgen -G "$cache/${kernel_pkg}_*.deb" | head -n1 || true)"
  if [[ -z "$deb" ]]; then
    # Stale apt lists name a file the mirror no longer has: refresh once, retry.
    (cd "$cache" && apt-get download "$kernel_pkg" >/dev/null 2>"$cache/download.log") ||
      { apt-get update -qq >/dev/null 2>&1 &&
        (cd "$cache" && apt-get download "$kernel_pkg" >/dev/null 2>"$cache/download.log"); } ||
      { cat "$cache/download.log" >&2; log "apt-get download $kernel_pkg failed"; exit 1; }
    deb="$(compgen -G "$cache/${kernel_pkg}_*.deb" | head -n1)"
  fi
  dpkg-deb -x "$deb" "$build/deb"
  cp "$build/deb/boot/vmlinuz-$release" "$build/vmlinuz"

  # --- vmlinux: the logic of the kernel's scripts/extract-vmlinux ----------
  # Find each compression magic in the bzImage, decompress from there, keep the
  # first result that is an ELF image.
  python3 - "$build/vmlinuz" "$build/vmlinux" <<'PY' || log "no vmlinux extracted: the bzImage will be booted"
import lzma, gzip, sys, zlib
data = open(sys.argv[1], "rb").read()
def try_xz(off):
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    return d.decompress(data[off:])
def try_gz(off):
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return d.decompress(data[off:])
for magic, fn in ((b"\xfd7zXZ\x00", try_xz), (b"\x1f\x8b\x08", try_gz)):
    off = data.find(magic)
    while off != -1:
        try:
            img = fn(off)
            if img[:4] == b"\x7fELF":
                open(sys.argv[2], "wb").write(img)
                sys.exit(0)
        except Exception:
            pass
        off = data.find(magic, off + 1)
sys.exit(1)
PY

  # --- modules: resolve dependencies from each .ko's modinfo "depends=" ----
  mods="$build/initrd/lib/modules"
  mkdir -p "$mods"
  python3 - "$build/deb/lib/modules/$release" "$mods" >"$build/modules.order" <<'PY'
import os, re, shutil, sys
root, dest = sys.argv[1], sys.argv[2]
paths = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if f.endswith(".ko"):
            paths[f[:-3].replace("-", "_")] = os.path.join(dirpath, f)
def deps(name):
    data = open(paths[name], "rb").read()
    m = re.search(rb"depends=([^\x00]*)\x00", data)
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d] if m else []
# virtio-blk for the root disk and the config drive, isofs to read it, the
# ACPI button plus evdev so the guest sees QMP system_powerdown.
wanted = ["virtio_pci", "virtio_blk", "virtio_net", "isofs", "button", "evdev"]
order, seen = [], set()
def visit(name, depth=0):
    if name in seen or depth > 16:
        return
    seen.add(name)
    for d in deps(name):
        visit(d, depth + 1)
    order.append(name)
for w in wanted:
    if w not in paths:
        sys.exit(f"module {w} not found under {root}")
    visit(w)
for name in order:
    shutil.copy(paths[name], os.path.join(dest, name + ".ko"))
    print(name)
PY

  # --- initramfs ------------------------------------------------------------
  ir="$build/initrd"
  mkdir -p "$ir"/{bin,dev,proc,sys,mnt/config,tmp,etc}
  cp "$busybox_bin" "$ir/bin/busybox"
  for applet in sh mount umount insmod poweroff reboot cat echo sleep dd ls grep sed tr chmod mkdir \
    ifconfig route udhcpc nc sha256sum cut head kill touch printf; do
    ln -sf busybox "$ir/bin/$applet"
  done
  # udhcpc hands the lease to a script: configure the interface and the route.
  cat >"$ir/etc/udhcpc.script" <<'DHCP'
#!/bin/sh
case "$1" in
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    if [ -n "$router" ]; then route add default gw "${router%% *}" dev "$interface"; fi
    echo "nuage-guest: network $interface $ip" >/dev/console
    ;;
esac
DHCP
  # What port 22 answers (a stand-in for sshd: the tests check the forward reaches it).
  printf '#!/bin/sh\necho SSH-2.0-nuage-tiny-guest\n' >"$ir/bin/ssh-banner"
  chmod +x "$ir/etc/udhcpc.script" "$ir/bin/ssh-banner"
  cp "$build/modules.order" "$ir/lib/modules/order"
  cat >"$ir/init" <<'INIT'
#!/bin/sh
# Nuage tiny guest: boot, read the config drive, run the user data, wait for
# the power button. Every line it prints goes to the serial console.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "nuage-guest: booted kernel $(cat /proc/sys/kernel/osrelease)"
# Ctrl-Alt-Del (Nuage's graceful reboot sends it over QMP): the kernel restarts
# at once by default; with 0 here it sends SIGINT to PID 1 instead, as under
# systemd or sysvinit, and PID 1 decides. The trap runs once the current
# foreground command ends.
echo 0 >/proc/sys/kernel/ctrl-alt-del
ctrl_alt_del() {
  if [ -e /tmp/ignore-ctrl-alt-del ]; then
    echo "nuage-guest: ctrl-alt-del ignored"
    return
  fi
  echo "nuage-guest: ctrl-alt-del, rebooting"
  umount /mnt/config 2>/dev/null
  reboot -f
}
trap ctrl_alt_del INT
while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null || echo "nuage-guest: insmod $m failed"; done </lib/modules/order
# The config drive shows up as a virtio disk; udev-less, so try each disk.
found=
i=0
while [ -z "$found" ] && [ $i -lt 50 ]; do
  for d in /dev/vd?; do
    [ -b "$d" ] || continue
    if mount -t iso9660 -o ro "$d" /mnt/config 2>/dev/null; then
      if [ -f /mnt/config/openstack/latest/meta_data.json ]; then found=$d; break; fi
      umount /mnt/config
    fi
  done
  [ -n "$found" ] || { i=$((i + 1)); sleep 0.1; }
done
if [ -n "$found" ]; then
  md=/mnt/config/openstack/latest
  echo "nuage-guest: config drive $found"
  echo "nuage-guest: meta_data $(cat $md/meta_data.json | tr -d '\n' | dd bs=512 count=1 2>/dev/null)"
  if [ -f $md/user_data ]; then
    cp $md/user_data /tmp/user_data
    chmod +x /tmp/user_data
    echo "nuage-guest: running user data"
    sh /tmp/user_data
    echo "nuage-guest: user data exited with $?"
  fi
else
  echo "nuage-guest: no config drive found"
fi
# The network: DHCP from QEMU's user network, then the metadata service.
ifconfig lo 127.0.0.1 up
ifconfig eth0 up 2>/dev/null
# busybox-static's wget segfaults (glibc's NSS in a static binary), so HTTP is
# spoken through nc: the body of a 200 answer, else failure.
imds_get() {
  printf 'GET %s HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n' "$1" |
    nc -w 10 169.254.169.254 80 >/tmp/imds.out 2>/dev/null || return 1
  head -n 1 /tmp/imds.out | grep -q ' 200 ' || return 1
  sed '1,/^\r*$/d' /tmp/imds.out
}
if udhcpc -i eth0 -s /etc/udhcpc.script -n -q -t 5 -T 1 >/dev/null 2>&1; then
  id="$(imds_get /latest/meta-data/instance-id)"
  echo "nuage-guest: metadata instance-id ${id:-unavailable}"
  if imds_get /latest/user-data >/tmp/imds-user-data; then
    echo "nuage-guest: metadata user-data sha256 $(sha256sum </tmp/imds-user-data | cut -c1-64)"
  else
    echo "nuage-guest: metadata user-data unavailable"
  fi
  # One banner line per connection, in the background (-ll: keep listening).
  nc -ll -p 22 -e /bin/ssh-banner </dev/null >/dev/null 2>&1 &
  echo "nuage-guest: port 22 answers"
else
  echo "nuage-guest: no DHCP lease on eth0"
fi
# Wait for the ACPI power button: its input device reports one event when QEMU
# sends system_powerdown.
button=
for n in /sys/class/input/event*; do
  [ -f "$n/device/name" ] || continue
  case "$(cat "$n/device/name")" in *"Power Button"*) button=/dev/input/${n##*/};; esac
done
if [ -n "$button" ]; then
  echo "nuage-guest: ready, waiting for the power button ($button)"
  # In the background: a trapped signal interrupts `wait`, not a foreground dd.
  dd if="$button" of=/dev/null bs=24 count=1 2>/dev/null &
  reader=$!
  while kill -0 "$reader" 2>/dev/null; do wait "$reader"; done
  echo "nuage-guest: power button pressed, powering off"
else
  echo "nuage-guest: no power button device, powering off"
fi
umount /mnt/config 2>/dev/null
poweroff -f
INIT
  chmod +x "$ir/init"
  # The unpacked package (mostly modules the guest does not load) is not needed again.
  rm -rf "$build/deb"
  (cd "$ir" && find . -print0 | sort -z | cpio --null -o -H newc --quiet | gzip -9n) >"$build/initrd.gz"
  printf '%s\n' "$kernel_pkg" >"$cache/last-kernel-pkg"
  touch "$build/done"
  # Keep the cache bounded: builds of older kernels or of older versions of
  # this script, and kernel packages other than this one, go.
  for stale in "$cache"/linux-image-*; do
    [[ "$stale" == "$build" || "$stale" == "$deb" ]] && continue
    rm -rf "$stale"
  done
fi

for f in vmlinuz initrd.gz; do cp -f "$build/$f" "$out/$f"; done
if [[ -f "$build/vmlinux" ]]; then cp -f "$build/vmlinux" "$out/vmlinux"; else rm -f "$out/vmlinux"; fi
cat >"$out/guest.env" <<ENV
KERNEL_RELEASE=$release
CMDLINE=console=ttyS0 panic=-1 quiet loglevel=4
ENV
log "guest ready in $out (kernel $release$([[ -f $out/vmlinux ]] && echo ', vmlinux for PVH'))"
