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
# llama.cpp (the offline demo LLM) compiles at install. Its default build detects the build
# machine's CPU and may emit instructions another machine, or this sandbox, cannot run (AMX tile
# loads die with SIGILL on a CPU that reports AMX). So it is built for a fixed x86-64 baseline,
# AVX2/FMA/F16C, once per version and flag set, into a wheel cache outside the checkout that later
# clones reuse. pip's own wheel cache is bypassed: it would hand back a native build.
LLAMA_CPP_VERSION="0.3.36"  # keep in step with pyproject.toml
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
wheel_key="$(printf '%s %s %s' "$LLAMA_CPP_VERSION" "$LLAMA_CMAKE_ARGS" "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)"
WHEELS="${VOICE_AGENT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-agent/wheels}/llama-$wheel_key"
if ! compgen -G "$WHEELS/llama_cpp_python-${LLAMA_CPP_VERSION}-*.whl" >/dev/null; then
  echo "setup: building llama-cpp-python ${LLAMA_CPP_VERSION} for a portable CPU baseline (minutes on 2 cores)"
  mkdir -p "$WHEELS"
  .venv/bin/pip install -q --upgrade pip
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" FORCE_CMAKE=1 .venv/bin/pip wheel -q --no-cache-dir --no-deps \
    --no-binary llama-cpp-python -w "$WHEELS" "llama-cpp-python==${LLAMA_CPP_VERSION}"
fi

stamp=".venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "setup: installing Python packages"
  .venv/bin/pip install -q --upgrade pip
  # The portable llama.cpp wheel first, from the cache only, so nothing rebuilds it natively.
  .venv/bin/pip install -q --no-index --force-reinstall --no-deps \
    "$WHEELS"/llama_cpp_python-"${LLAMA_CPP_VERSION}"-*.whl
  .venv/bin/pip install -q --find-links "$WHEELS" -e ".[dev,local]"
  # One tiny completion proves the build runs on this CPU (a bad build loads, then dies at once).
  .venv/bin/python -m voice_agent.devstack.local_llm --check
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

# Smart Turn v3.2 (BSD-2-Clause), the acoustic end-of-turn model of the smart_turn and hybrid
# turn detectors and its unit test: fetched once into the user's cache. Without network setup
# carries on; those detectors then fall back to the transcript rules and the test is skipped.
.venv/bin/voice-agent fetch-turn-model \
  || echo "setup: warning: could not fetch the Smart Turn model; run 'voice-agent fetch-turn-model' later" >&2

scripts/install-livekit-server.sh
# Jaeger all-in-one for the trace test; built once (minutes), then kept in .cache/bin.
scripts/install-jaeger.sh
echo "setup: done"
