#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (as root) or a developer box:
# system packages via apt where missing, a virtualenv in .venv, sealroom with dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SEALROOM_VENV:-.venv}
PYTHON=${PYTHON:-python3}
# Debian packages the test-suite and the run command use (checked one by one, installed
# only where missing, so a developer machine is left alone). qemu-system-x86, ovmf and
# python3.11 (Debian's, copied into the guest's initramfs) boot the measured guest image
# (ADR 0034/0035); its kernel comes from `apt-get download` at build time.
APT_PACKAGES=(python3-venv python3-dev gcc make git openssl swtpm swtpm-tools tpm2-tools bubblewrap libseccomp2 iproute2 postgresql chromium golang-go golang-golang-x-mod-dev softhsm2 qemu-system-x86 ovmf python3.11)

# python3-venv/python3-dev matter only when the interpreter cannot make a venv itself.
if "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  NEEDED=()
  for p in "${APT_PACKAGES[@]}"; do
    case "$p" in python3-venv|python3-dev) ;; *) NEEDED+=("$p") ;; esac
  done
else
  NEEDED=("${APT_PACKAGES[@]}")
fi
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${NEEDED[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${missing[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi

stamp="$VENV/.sealroom-installed"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
