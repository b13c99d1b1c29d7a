#!/usr/bin/env bash
# Installs the tools that build twinguard policies written in JavaScript: a pinned
# @bytecodealliance/componentize-js in target/tools/js (npm --prefix). Idempotent: an install
# of the pinned version is reused. Needs node >= 18 and npm with access to the package registry.
set -euo pipefail
COMPONENTIZE_JS_VERSION="0.23.0"
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/target/tools/js"
fail() {
    echo "js-tools: $*" >&2
    exit 1
}
command -v node >/dev/null 2>&1 || fail "node not found: install Node.js 18 or newer (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || fail "npm not found: install it (Debian: apt-get install npm)"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 18 ] || fail "node $(node --version) is too old: componentize-js needs 18 or newer"
installed="$(node -p "require('$prefix/node_modules/@bytecodealliance/componentize-js/package.json').version" 2>/dev/null || true)"
if [ "$installed" = "$COMPONENTIZE_JS_VERSION" ]; then
    echo "js-tools: componentize-js $COMPONENTIZE_JS_VERSION already in $prefix"
    exit 0
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >&2 ||
    fail "npm could not install @bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION (is the package registry reachable?)"
[ -x "$prefix/node_modules/.bin/componentize-js" ] || fail "the install has no componentize-js binary"
echo "js-tools: componentize-js $COMPONENTIZE_JS_VERSION installed in $prefix"
