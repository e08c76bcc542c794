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
  local python=${PYTHON:-python3}
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
  [ -f .env ] || cp .env.example .env
}
