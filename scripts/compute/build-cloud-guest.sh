#!/usr/bin/env bash
# Builds a real Debian cloud guest for the compute tests: a debootstrap'ed
# Debian bookworm (minbase) with Debian's cloud kernel, cloud-init,
# openssh-server and sudo, booted by QEMU directly from its kernel and initrd
# (no bootloader), finding its root file system by label.
#
#   scripts/compute/build-cloud-guest.sh OUTDIR
#
# Writes into OUTDIR:
#   disk.qcow2   the root file system: ext4 labelled "nuage-root" on the whole
#                disk (no partition table), compressed qcow2
#   vmlinuz      the guest's kernel (bzImage)
#   vmlinux      the same kernel, uncompressed ELF (QEMU boots it through PVH,
#                faster under TCG), when it can be extracted
#   initrd.img   the guest's initramfs (initramfs-tools)
#   guest.env    the kernel release, the default user, the disk's size
#
# Why no bootloader: Nuage boots kernel images directly with a fixed command
# line (crates/ec2-api, KERNEL_CMDLINE: no root=). The initramfs carries
# ROOT=LABEL=nuage-root in its own configuration (conf.d), so the image needs
# nothing on the command line and does not depend on the order of the disks.
#
# cloud-init is set up for Nuage: data sources ConfigDrive then OpenStack (the
# config drive labelled config-2 and the metadata service at 169.254.169.254,
# both what Nuage gives an instance), networking rendered for
# systemd-networkd, only an ed25519 host key generated at first boot (RSA
# generation is slow under TCG), no root password, default user "debian"
# with passwordless sudo and the instance's key pair.
#
# Cached under $NUAGE_GUEST_CACHE (default ~/.cache/nuage-guest): the
# debootstrap'ed tree is keyed by the package list (its .debs are kept too),
# the finished image by a hash of this script, so a second run copies files
# only. Must run as root (debootstrap and chroot need it; mkfs.ext4 -d writes
# the tree without loop mounts); the cache directory and every directory above
# it must then be root's and not writable by group or others (else another
# user could swap a tree root then chroots into, or the image it packs), or
# the script refuses to run. A sticky directory (/tmp) is no exception.
#
# Package scripts run in the tree must not start daemons on the host (sshd's
# postinst would): a policy-rc.d that refuses every start is in the tree while
# they run, and after each step in the tree any process whose root directory
# lies in it is killed.
#
# Needs: debootstrap, chroot, flock, mkfs.ext4 (e2fsprogs), qemu-img, python3,
# lz4 (for vmlinux; without it only the bzImage is written), and a Debian
# mirror on the first run ($NUAGE_DEBIAN_MIRROR, default deb.debian.org).
# scripts/install-test-deps.sh installs the tools.
set -euo pipefail

out="${1:?usage: build-cloud-guest.sh OUTDIR}"
cache="${NUAGE_GUEST_CACHE:-$HOME/.cache/nuage-guest}"
mirror="${NUAGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
root_label=nuage-root
start_s=$SECONDS
log() { printf 'build-cloud-guest: [%3ds] %s\n' "$((SECONDS - start_s))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it); try: sudo $0 $out"
for tool in debootstrap chroot flock mkfs.ext4 qemu-img python3 sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool (scripts/install-test-deps.sh installs it)"
done

# The packages on top of minbase. systemd-sysv and udev: minbase has no init;
# linux-image-cloud-amd64: Debian's kernel flavour for VMs (virtio built for,
# no sound or GPU drivers: half the modules of the generic one);
# initramfs-tools for its initrd; cloud-init (pulls python3 and
# isc-dhcp-client); openssh-server; sudo for the default user; e2fsprogs for
# resizing the root file system to the instance's disk.
packages=(systemd-sysv udev linux-image-cloud-amd64 initramfs-tools cloud-init
  openssh-server sudo e2fsprogs)

# Root builds in the cache and chroots into what is there: no other user may
# be able to change it, nor any directory on the way to it.
check_cache_owner() {
  local dir owner mode
  dir="$(realpath -m "$1")"
  while :; do
    if [[ -e "$dir" ]]; then
      owner="$(stat -c %u "$dir")"
      mode="$(stat -c %a "$dir")"
      if [[ "$owner" != 0 ]] || (((8#$mode & 8#022) != 0)); then
        die "$dir (on the way to the cache $1) is owned by uid $owner with mode $mode: as root, the cache and every directory above it must be root's and not writable by group or others (chmod go-w, or choose another NUAGE_GUEST_CACHE)"
      fi
    fi
    [[ "$dir" == / ]] && break
    dir="$(dirname "$dir")"
  done
}
check_cache_owner "$cache"
mkdir -p "$cache" "$out"
chmod go-w "$cache"
script_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
packages_hash="$(printf '%s\n' "$suite" "$mirror" "${packages[@]}" | sha256sum | cut -c1-16)"
rootfs_dir="$cache/cloud-rootfs-$packages_hash"
build="$cache/cloud-guest-$script_hash"

# Unmounts whatever is mounted under $1 (deepest first). A tree is never
# deleted with something still mounted in it: rm -rf would walk into the mount.
unmount_under() {
  local dir
  dir="$(realpath -m "$1")"
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}
remove_tree() {
  unmount_under "$1"
  rm -rf --one-file-system "$1"
}
# One build at a time per cache (two test binaries may ask at once); an
# interrupted build leaves nothing mounted.
exec 9>"$cache/cloud-guest.lock"
flock 9
trap 'unmount_under "$rootfs_dir"; unmount_under "$build"' EXIT

# Kills (SIGKILL) every process whose root directory lies in the tree $1: a
# daemon a package's script started there despite policy-rc.d. A few rounds,
# in case one forked meanwhile.
kill_in_tree() {
  local t p root round
  t="$(realpath -m "$1")"
  for round in 1 2 3; do
    for p in /proc/[0-9]*; do
      root="$(readlink "$p/root" 2>/dev/null)" || continue
      if [[ "$root" == "$t" || "$root" == "$t"/* ]]; then
        log "killing ${p#/proc/} ($(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-80)), left running in the tree"
        kill -9 "${p#/proc/}" 2>/dev/null || true
      fi
    done
    if ((round < 3)); then sleep 0.2; fi
  done
}

# Runs a command in the tree $1 with /proc mounted (apt, update-initramfs and
# systemctl need it; /dev holds debootstrap's own device nodes, so the host's is
# not bound in); /proc is unmounted again even on failure. While it runs,
# usr/sbin/policy-rc.d refuses every service start (invoke-rc.d and
# deb-systemd-invoke ask it): a postinst must not start sshd on the host.
in_chroot() {
  local t="$1" rc=0
  shift
  printf '#!/bin/sh\nexit 101\n' >"$t/usr/sbin/policy-rc.d"
  chmod 755 "$t/usr/sbin/policy-rc.d"
  mount -t proc proc "$t/proc"
  chroot "$t" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
  kill_in_tree "$t"
  umount "$t/proc" || umount -l "$t/proc"
  rm -f "$t/usr/sbin/policy-rc.d"
  return "$rc"
}

# --- 1. debootstrap + apt-get (cached by package list) -----------------------
# debootstrap lays down minbase; apt inside the tree installs the rest, since
# debootstrap's own --include resolves no virtual packages (cloud-init's
# python3-cryptography needs python3-cffi-backend-api-*).
if [[ ! -f "$rootfs_dir/done" ]]; then
  log "debootstrap --variant=minbase $suite from $mirror into $rootfs_dir"
  remove_tree "$rootfs_dir"
  mkdir -p "$rootfs_dir" "$cache/debs"
  tree="$rootfs_dir/tree"
  if ! debootstrap --variant=minbase --cache-dir="$cache/debs" \
    "$suite" "$tree" "$mirror" >"$rootfs_dir/debootstrap.log" 2>&1; then
    tail -n 30 "$rootfs_dir/debootstrap.log" >&2
    [[ -f "$tree/debootstrap/debootstrap.log" ]] && tail -n 30 "$tree/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log above; full log in $rootfs_dir)"
  fi
  log "apt-get install --no-install-recommends ${packages[*]}"
  cp /etc/resolv.conf "$tree/etc/resolv.conf"
  # apt's downloads land in the cache too (bind mount), for the next build;
  # autoclean drops the versions the mirror no longer has.
  mkdir -p "$cache/debs/apt"
  mount --bind "$cache/debs/apt" "$tree/var/cache/apt/archives"
  rc=0
  in_chroot "$tree" sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends ${packages[*]} && apt-get autoclean -q" \
    >"$rootfs_dir/apt.log" 2>&1 || rc=$?
  umount "$tree/var/cache/apt/archives" || umount -l "$tree/var/cache/apt/archives"
  if ((rc != 0)); then
    tail -n 30 "$rootfs_dir/apt.log" >&2
    die "apt-get install in the tree failed (log above; full log in $rootfs_dir)"
  fi
  rm -f "$tree/etc/resolv.conf"
  touch "$rootfs_dir/done"
  log "root tree ready ($(du -sh "$tree" | cut -f1))"
  # Older trees (other package lists) go; the .debs stay for the next build.
  for stale in "$cache"/cloud-rootfs-*; do
    [[ "$stale" == "$rootfs_dir" ]] || remove_tree "$stale"
  done
else
  log "root tree cached in $rootfs_dir"
fi

# --- 2. configure and pack (cached by this script's hash) --------------------
if [[ ! -f "$build/done" ]]; then
  log "configuring the guest in $build"
  remove_tree "$build"
  mkdir -p "$build"
  t="$build/tree"
  cp -a "$rootfs_dir/tree" "$t"

  printf 'nuage-guest\n' >"$t/etc/hostname"
  printf 'LABEL=%s / ext4 defaults,discard,errors=remount-ro 0 1\n' "$root_label" >"$t/etc/fstab"
  # No root password (the account stays locked); keys only.
  sed -i 's/^root:[^:]*:/root:*:/' "$t/etc/shadow"
  # apt sources for a user of the image (the build itself used debootstrap's).
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$suite" >"$t/etc/apt/sources.list"

  # cloud-init: only the sources Nuage provides, no waiting on others.
  cat >"$t/etc/cloud/cloud.cfg.d/90_nuage.cfg" <<'CFG'
# Nuage: a config drive (config-2, OpenStack layout) and the metadata service
# at 169.254.169.254 (OpenStack and EC2 paths); nothing else to probe.
datasource_list: [ ConfigDrive, OpenStack, None ]
datasource:
  OpenStack:
    max_wait: 10
    timeout: 5
    retries: 2
# ed25519 only: an RSA host key takes seconds to generate under TCG.
ssh_genkeytypes: [ ed25519 ]
ssh_deletekeys: true
disable_root: true
# /etc/hosts names the instance (sudo resolves its own host name).
manage_etc_hosts: true
# No locale is generated in the image (C.UTF-8 is built in); cloud-init's
# default en_US.UTF-8 would fail in update-locale and mark the boot an error.
locale: false
ssh_pwauth: false
# No GRUB in the image (the kernel is booted directly): nothing to configure.
grub_dpkg:
  enabled: false
system_info:
  network:
    renderers: [ networkd ]
  default_user:
    name: debian
    lock_passwd: true
    gecos: Debian
    groups: [adm, sudo]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
CFG
  # What ssh_pwauth: false makes cloud-init write, written now: cloud-init
  # then finds nothing to change and does not restart sshd in the middle of
  # first boot (which drops a client that connects at that moment).
  printf 'PasswordAuthentication no\n' >"$t/etc/ssh/sshd_config.d/50-cloud-init.conf"
  chmod 600 "$t/etc/ssh/sshd_config.d/50-cloud-init.conf"
  # Keys generated while the image was built must not be shared by instances.
  rm -f "$t"/etc/ssh/ssh_host_*
  # A fresh machine id per instance (systemd makes one at first boot).
  : >"$t/etc/machine-id"
  rm -f "$t/var/lib/dbus/machine-id"

  # The initramfs finds the root by label, whatever the command line says.
  printf 'ROOT="LABEL=%s"\n' "$root_label" >"$t/etc/initramfs-tools/conf.d/nuage-root"
  # Only the modules a Nuage VM needs: a smaller initrd is faster to unpack.
  sed -i 's/^MODULES=.*/MODULES=list/' "$t/etc/initramfs-tools/initramfs.conf"
  printf '%s\n' virtio_pci virtio_blk virtio_net virtio_scsi ext4 crc32c_generic >"$t/etc/initramfs-tools/modules"

  # Fast boot: nothing that runs on a timer. systemd-networkd renders
  # cloud-init's network config; its wait-online is masked (network-online is
  # reached at once): cloud-init's own stages order themselves around the NIC.
  { in_chroot "$t" systemctl enable systemd-networkd.service &&
    in_chroot "$t" systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer \
      e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service
  } >"$build/systemctl.log" 2>&1 || { cat "$build/systemctl.log" >&2; die "systemctl in the tree failed"; }
  modules_dirs=("$t"/lib/modules/*)
  ((${#modules_dirs[@]} == 1)) || die "expected one kernel in the tree, found: ${modules_dirs[*]}"
  release="$(basename "${modules_dirs[0]}")"
  log "update-initramfs for $release"
  in_chroot "$t" update-initramfs -u -k "$release" >"$build/initramfs.log" 2>&1 ||
    { cat "$build/initramfs.log" >&2; die "update-initramfs failed"; }
  [[ "$(in_chroot "$t" lsinitramfs "/boot/initrd.img-$release" | grep -c 'conf/conf.d/nuage-root$' || true)" -ge 1 ]] ||
    die "the initramfs does not carry conf.d/nuage-root"

  cp "$t/boot/vmlinuz-$release" "$build/vmlinuz"
  cp "$t/boot/initrd.img-$release" "$build/initrd.img"
  # vmlinux: the logic of the kernel's scripts/extract-vmlinux (as in
  # build-tiny-guest.sh): the first decompressed payload that is an ELF.
  python3 - "$build/vmlinuz" "$build/vmlinux" <<'PY' || log "no vmlinux extracted: boot the bzImage"
import lzma, shutil, subprocess, sys, zlib
data = open(sys.argv[1], "rb").read()
def try_xz(off):
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[off:])
def try_gz(off):
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[off:])
def try_lz4(off):
    # Debian's cloud kernel is LZ4 (legacy frame); Python has no LZ4, the lz4
    # tool does. Trailing bytes after the frame make it exit non-zero after
    # writing the whole payload, so its status is not looked at.
    if shutil.which("lz4") is None:
        return b""
    return subprocess.run(["lz4", "-dc"], input=data[off:], capture_output=True).stdout
for magic, fn in ((b"\xfd7zXZ\x00", try_xz), (b"\x1f\x8b\x08", try_gz), (b"\x02\x21\x4c\x18", try_lz4)):
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

  # Slim the tree: documentation, manuals, apt's caches and lists.
  rm -rf "$t"/usr/share/doc/* "$t"/usr/share/man/* "$t"/usr/share/info/* \
    "$t"/var/cache/apt/*.bin "$t"/var/cache/apt/archives/*.deb "$t"/var/lib/apt/lists/* \
    "$t"/var/log/*.log "$t"/debootstrap
  find "$t/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' ! -name 'en*' -exec rm -rf {} + 2>/dev/null || true
  # Anything the build left in /tmp or cloud-init state goes.
  rm -rf "$t"/tmp/* "$t"/var/lib/cloud/*

  # The file system: the tree plus room for first boot (cloud-init grows it to
  # the instance's disk anyway). 1 MiB blocks of slack, at least 256 MiB.
  used_mib="$(du -sm "$t" | cut -f1)"
  size_mib=$((used_mib + used_mib / 4 + 256))
  log "mkfs.ext4 -d: ${used_mib} MiB of files in a ${size_mib} MiB file system"
  truncate -s "${size_mib}M" "$build/disk.raw"
  mkfs.ext4 -q -F -L "$root_label" -d "$t" -E root_owner=0:0 "$build/disk.raw"
  log "qemu-img convert -c to qcow2"
  qemu-img convert -c -f raw -O qcow2 "$build/disk.raw" "$build/disk.qcow2"
  rm -f "$build/disk.raw"
  remove_tree "$t"
  cat >"$build/guest.env" <<ENV
KERNEL_RELEASE=$release
ROOT_LABEL=$root_label
DEFAULT_USER=debian
DISK_MIB=$size_mib
ENV
  touch "$build/done"
  # Older images (older versions of this script) go.
  for stale in "$cache"/cloud-guest-*; do
    [[ "$stale" == "$build" ]] || remove_tree "$stale"
  done
else
  log "image cached in $build"
fi

for f in disk.qcow2 vmlinuz initrd.img guest.env; do cp -f "$build/$f" "$out/$f"; done
if [[ -f "$build/vmlinux" ]]; then cp -f "$build/vmlinux" "$out/vmlinux"; else rm -f "$out/vmlinux"; fi
log "guest ready in $out: disk.qcow2 $(du -h "$out/disk.qcow2" | cut -f1), initrd.img $(du -h "$out/initrd.img" | cut -f1)$([[ -f $out/vmlinux ]] && echo ', vmlinux for PVH')"
