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

# The web client: livekit-client (pinned in web/package-lock.json) and web/src bundled by esbuild
# into web/static/dist/, served from our own origin. Rebuilt only when those inputs change.
web_hash="$(cd web && { sha256sum package.json package-lock.json; find src -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)"
web_stamp="web/static/dist/.built-$web_hash"
if [[ ! -f "$web_stamp" ]]; then
  echo "setup: building the web client"
  (cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null \
    && npm run --silent build -- --log-level=warning)
  rm -f web/static/dist/.built-*
  touch "$web_stamp"
fi

scripts/install-livekit-server.sh
echo "setup: done"
