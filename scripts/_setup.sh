# Shared by scripts/run.sh and scripts/test.sh: a .venv in the repo root with the given
# requirements file installed, and a .env made from .env.example. Sourced, not run.

APT_UPDATED=${APT_UPDATED:-0}

apt_install() {
  # apt_install PACKAGE... : install the Debian packages that are missing (needs root).
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "Missing Debian packages: ${missing[*]}. Install them (as root: apt-get install ${missing[*]})." >&2
    return 1
  fi
  if [ "$APT_UPDATED" != 1 ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  echo "Installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_venv() {
  # setup_venv REQUIREMENTS_FILE
  # The interpreter a newcomer has: Debian's /usr/bin/python3 where it exists (a separately
  # installed newer Python on PATH would hide a pin that needs more than Debian ships), else
  # python3 on PATH; PYTHON overrides both. A .venv made by another interpreter is rebuilt.
  local python=${PYTHON:-}
  if [ -z "$python" ]; then
    if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=python3; fi
  fi
  local want
  want=$("$python" -c 'import sys; print(sys.version)') || { echo "No Python at $python" >&2; return 1; }
  if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import sys; print(sys.version)')" != "$want" ]; then
    echo "Rebuilding .venv with $python ($("$python" --version))"
    rm -rf .venv
  fi
  if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      apt_install python3-venv
      "$python" -m venv .venv
    fi
  fi
  # Reinstall only when the requirements changed since the last install.
  local stamp=.venv/.installed-$(basename "$1")
  if [ ! -f "$stamp" ] || ! cmp -s "$stamp" <(cat requirements*.txt); then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$1"
    cat requirements*.txt > "$stamp"
  fi
  make_env
}

make_env() {
  # .env from .env.example the first time, with a fresh random SECRET_KEY and
  # CRM_ENCRYPTION_KEYS: the example's keys are public, and refused when DEBUG is off.
  [ -f .env ] && return 0
  (umask 077 && .venv/bin/python - <<'PY'
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

fresh = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "CRM_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
}
lines = []
for line in Path(".env.example").read_text().splitlines():
    name = line.partition("=")[0]
    lines.append(f"{name}={fresh[name]}" if name in fresh else line)
Path(".env.tmp").write_text("\n".join(lines) + "\n")
os.replace(".env.tmp", ".env")
PY
  )
  echo "Wrote .env with new random keys (from .env.example)."
}
