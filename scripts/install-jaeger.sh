#!/usr/bin/env bash
# Build the pinned Jaeger all-in-one release into .cache/bin (skipped when present). Only the trace
# test needs it; JAEGER_BIN, when set to an existing file, is used instead. Its go.mod carries a
# replace directive, which `go install pkg@version` refuses, so the module is downloaded through
# the Go module proxy and built as the main module (where the replace applies).
set -euo pipefail
VERSION="v1.76.0"  # keep in step with tests/jaeger.py
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.cache/bin/jaeger"
STAMP="$DEST.version"

if [[ -n "${JAEGER_BIN:-}" && -x "${JAEGER_BIN}" ]]; then
  echo "jaeger: using JAEGER_BIN=${JAEGER_BIN}"
  exit 0
fi
if [[ -x "$DEST" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]]; then
  echo "jaeger: ${VERSION} already in .cache/bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is needed to build Jaeger (go install); install Go 1.26+" >&2
  exit 1
fi
echo "jaeger: building ${VERSION} (several minutes the first time)"
tmp="$(mktemp -d)"
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
src="$(go mod download -json "github.com/jaegertracing/jaeger@${VERSION}" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$src" ]] || { echo "error: could not download jaeger ${VERSION}" >&2; exit 1; }
cp -r "$src" "$tmp/src"
chmod -R u+w "$tmp/src"
(cd "$tmp/src" && GOFLAGS="-trimpath -mod=mod" go build -o "$tmp/jaeger" ./cmd/jaeger)
mkdir -p "$(dirname "$DEST")"
mv "$tmp/jaeger" "$DEST"
echo "$VERSION" >"$STAMP"
echo "jaeger: ${VERSION} installed in .cache/bin"
