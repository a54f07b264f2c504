#!/usr/bin/env bash
# Set up everything the product and its tests need on a fresh Debian machine. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)  # load generator for `make bench`
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)  # `voice-agent call --say`, test speech
command -v sox >/dev/null 2>&1 || need_apt+=(sox)  # test speech conversion
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # browser tests (Playwright drives it)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)  # store tests
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)  # builds the web client bundle
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]} from Debian packages"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "setup: installing Python packages"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev,local]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

scripts/install-livekit-server.sh
echo "setup: done"
