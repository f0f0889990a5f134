#!/usr/bin/env bash
# Installs the S3 clients that the compatibility suite (tests/compat) drives,
# SoftHSM2, the PKCS#11 token the HSM root-of-trust tests run against
# (crates/kms, crates/nuage/tests/hsm.rs), and PostgreSQL, whose programs the
# PostgreSQL metadata tests run a throwaway server with (crates/testsupport).
#
# Why a script and not "whatever is on the machine": CI runs on a fresh machine
# as often as not, so every tool the tests need must be installed by the
# project's own files, at pinned versions, so a client upgrade never changes a
# test result silently.
#
# Idempotent and fast on a second run: the venv carries a stamp file holding
# the exact pin list; when the stamp matches and the tools answer, nothing is
# downloaded.
#
# Environment:
#   NUAGE_TOOLS_DIR  where the venv lives (default: $HOME/.cache/nuage-tools)
#   NUAGE_PYTHON     interpreter used to create the venv (default: python3)
set -euo pipefail

tools_dir="${NUAGE_TOOLS_DIR:-$HOME/.cache/nuage-tools}"
venv="$tools_dir/venv"
python="${NUAGE_PYTHON:-python3}"

# Pinned client versions. awscli v1 pins botocore exactly; boto3 must accept
# the same botocore, so the three move together. awscli 1.45 / botocore 1.43
# already send CRC checksums by default (the behaviour that broke many
# S3-compatible servers), which is what we want to exercise.
pip_pins=(
  "awscli==1.45.11"
  "botocore==1.43.11"
  "boto3==1.43.11"
  "s3cmd==2.4.0"
  "pytest==8.4.2"
)

log() { printf 'install-test-deps: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------
apt_missing=()
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
command -v rclone >/dev/null 2>&1 || apt_missing+=(rclone)
# softhsm2 brings softhsm2-util and, through libsofthsm2, the PKCS#11 module.
if ! command -v softhsm2-util >/dev/null 2>&1 || [[ ! -e /usr/lib/softhsm/libsofthsm2.so ]]; then
  apt_missing+=(softhsm2)
fi
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_missing+=(python3-venv)
fi
# postgresql brings initdb, postgres and pg_isready (/usr/lib/postgresql/*/bin):
# the PostgreSQL metadata tests start a throwaway server of their own from them
# (crates/testsupport); the cluster the package may start is never used.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  apt_missing+=(postgresql)
fi

if ((${#apt_missing[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing ${apt_missing[*]} and no apt-get to install them" >&2
    exit 1
  fi
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  log "apt-get installing: ${apt_missing[*]}"
  apt_log="$(mktemp)"
  # apt's chatter goes to a log that is shown only if something fails.
  if ! { "${sudo_cmd[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
      --no-install-recommends "${apt_missing[@]}"; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    log "apt-get failed" >&2
    exit 1
  fi
  rm -f "$apt_log"
  # If python3 was not able to make venvs and we just installed python3-venv,
  # it only helps Debian's own python3.
  if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    python=/usr/bin/python3
  fi
else
  log "curl, rclone and softhsm2 already present ($(rclone version 2>/dev/null | head -n1))"
fi

# --- Compute: QEMU, config drives, the tiny guest ---------------------------
# crates/compute boots VMs under QEMU (TCG) from a guest that
# scripts/compute/build-tiny-guest.sh builds: qemu-system-x86 and qemu-utils,
# xorriso for config drives, socat for the metadata service, busybox-static,
# cpio and xz for the initramfs and the kernel. On bookworm, qemu-system-x86 and qemu-utils come TOGETHER from
# bookworm-backports: bookworm's own qemu-system-x86 (7.2) would replace a
# newer qemu-utils with its own.
compute_missing=()
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
  compute_missing+=(qemu-system-x86 qemu-utils)
fi
if ! command -v xorriso >/dev/null 2>&1 && ! command -v genisoimage >/dev/null 2>&1; then
  compute_missing+=(xorriso)
fi
# A dynamic busybox (package busybox) cannot run in an initramfs without libc.
if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
  compute_missing+=(busybox-static)
fi
# socat carries each guest connection to 169.254.169.254 to the host's
# metadata socket (QEMU's `guestfwd=...-cmd:socat ...`).
command -v socat >/dev/null 2>&1 || compute_missing+=(socat)
command -v cpio >/dev/null 2>&1 || compute_missing+=(cpio)
command -v xz >/dev/null 2>&1 || compute_missing+=(xz-utils)
# The Debian cloud-init guest (scripts/compute/build-cloud-guest.sh,
# crates/nuage/tests/compute_cloud_init.rs): debootstrap for the tree,
# mkfs.ext4 -d for the disk without loop mounts, lz4 to unpack the cloud
# kernel into a vmlinux, and ssh/ssh-keygen to log in with a fresh key.
command -v debootstrap >/dev/null 2>&1 || compute_missing+=(debootstrap)
command -v mkfs.ext4 >/dev/null 2>&1 || compute_missing+=(e2fsprogs)
command -v lz4 >/dev/null 2>&1 || compute_missing+=(lz4)
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 ||
  compute_missing+=(openssh-client)
if ((${#compute_missing[@]})); then
  compute_sudo=()
  if [[ $(id -u) -ne 0 ]]; then compute_sudo=(sudo); fi
  compute_release=()
  # shellcheck disable=SC1091
  codename="$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")"
  if [[ "$codename" == bookworm ]]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding bookworm-backports to the apt sources (for QEMU 10)"
      printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
        'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' |
        "${compute_sudo[@]}" tee /etc/apt/sources.list.d/nuage-bookworm-backports.sources >/dev/null
    fi
    compute_release=(-t bookworm-backports)
  fi
  log "apt-get installing for compute: ${compute_missing[*]} ${compute_release[*]}"
  apt_log="$(mktemp)"
  if ! { "${compute_sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${compute_sudo[@]}" apt-get install -y -qq \
      --no-install-recommends "${compute_release[@]}" "${compute_missing[@]}"; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    log "apt-get failed (compute packages)" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

# --- Python venv -----------------------------------------------------------
stamp="$venv/.nuage-pins"
want="$(printf '%s\n' "${pip_pins[@]}")"

venv_ok() {
  [[ -x "$venv/bin/python" ]] &&
    [[ -f "$stamp" ]] &&
    [[ "$(cat "$stamp")" == "$want" ]] &&
    "$venv/bin/python" -c 'import boto3, botocore, pytest, awscli' >/dev/null 2>&1 &&
    [[ -x "$venv/bin/aws" && -x "$venv/bin/s3cmd" ]]
}

if venv_ok; then
  log "venv $venv already has: $(tr '\n' ' ' <"$stamp")"
else
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv $venv with $("$python" --version 2>&1)"
    rm -rf "$venv"
    mkdir -p "$tools_dir"
    "$python" -m venv "$venv"
  fi
  log "pip installing: ${pip_pins[*]}"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_pins[@]}"
  printf '%s\n' "$want" >"$stamp"
fi

log "aws: $("$venv/bin/aws" --version 2>&1)"
log "s3cmd: $("$venv/bin/s3cmd" --version 2>&1)"
log "pytest: $("$venv/bin/python" -m pytest --version 2>&1)"
log "rclone: $(rclone version 2>/dev/null | head -n1)"
log "curl: $(curl --version | head -n1)"
log "softhsm2: $(softhsm2-util --version 2>&1)"
pg_bin="$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n1 || true)"
log "postgresql: $([[ -n "$pg_bin" ]] && "$pg_bin" --version)"
log "qemu: $(qemu-system-x86_64 --version | head -n1); $(qemu-img --version | head -n1)"
log "venv bin dir: $venv/bin"
