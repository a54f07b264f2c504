#!/usr/bin/env bash
# Install the pinned LiveKit server release with `go install` into .cache/bin (skipped when present).
# LIVEKIT_SERVER_BIN, when set to an existing file, is used instead and nothing is built.
set -euo pipefail
VERSION="v1.13.5"  # keep in step with voice_agent/devstack/livekit_server.py
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.cache/bin/livekit-server"

if [[ -n "${LIVEKIT_SERVER_BIN:-}" && -x "${LIVEKIT_SERVER_BIN}" ]]; then
  echo "livekit-server: using LIVEKIT_SERVER_BIN=${LIVEKIT_SERVER_BIN}"
  exit 0
fi
if [[ -x "$DEST" ]] && "$DEST" --version 2>/dev/null | grep -q "${VERSION#v}"; then
  echo "livekit-server: ${VERSION} already in .cache/bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is needed to build the LiveKit server (go install); install Go 1.26+" >&2
  exit 1
fi
echo "livekit-server: building ${VERSION} with go install (a few minutes the first time)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS="-trimpath" go install "github.com/livekit/livekit-server/cmd/server@${VERSION}"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/server" "$DEST"
"$DEST" --version
