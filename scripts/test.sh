#!/usr/bin/env bash
# The project's single test command; CI runs exactly this (through .ci/run).
#
#   ./scripts/test.sh                 everything: lint, unit/integration tests,
#                                     client-compatibility suite
#   NUAGE_SKIP_LINT=1 ./scripts/test.sh   skip cargo fmt / clippy (quick local runs)
#   ./scripts/test.sh -k boto3        extra arguments go to pytest
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default: $HOME/.cache/nuage-target, shared
#                     across clones so CI reuses the build cache on this machine)
#   NUAGE_TOOLS_DIR   where scripts/install-test-deps.sh keeps its venv
#   NUAGE_SKIP_LINT   1 to skip formatting and clippy checks
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nuage-target}"
tools_dir="${NUAGE_TOOLS_DIR:-$HOME/.cache/nuage-tools}"
venv_bin="$tools_dir/venv/bin"

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
NUAGE_TOOLS_DIR="$tools_dir" "$repo_root/scripts/install-test-deps.sh"

if [[ "${NUAGE_SKIP_LINT:-0}" == "1" ]]; then
  step "skipping cargo fmt and clippy (NUAGE_SKIP_LINT=1)"
else
  step "cargo fmt --all -- --check"
  cargo fmt --all -- --check

  step "cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
fi

step "cargo test --workspace"
cargo test --workspace

step "cargo build -p nuage"
cargo build -p nuage
nuage_bin="$CARGO_TARGET_DIR/debug/nuage"
[[ -x "$nuage_bin" ]] || { echo "test.sh: $nuage_bin was not built" >&2; exit 1; }

step "client-compatibility suite (tests/compat)"
# pytest's own temp dirs live under the target dir and are wiped at the start
# of each run, so repeated runs do not pile up 100 MiB test files in /tmp.
PATH="$venv_bin:$PATH" NUAGE_BIN="$nuage_bin" \
  "$venv_bin/python" -m pytest tests/compat \
  -p no:cacheprovider -ra \
  --basetemp "$CARGO_TARGET_DIR/compat-tmp" \
  "$@"
