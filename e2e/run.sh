#!/usr/bin/env bash
# Browser end-to-end tests of the demo client served by the gateway at `/`:
# headless Debian Chromium driven by playwright-core (no browser download).
# Installs what it needs when missing (safe to run again), builds the gateway
# (debug), then runs chat.test.mjs, which starts, restarts and stops the
# server itself. Screenshots and server logs land in e2e/artifacts/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

log() { printf '\n==> %s\n' "$*"; }

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium (Debian package)"
  apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs and npm (Debian packages)"
  apt_install nodejs npm
fi

# playwright-core as pinned by package-lock.json; it never downloads a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
wanted="$(node -p "require('$here/package-lock.json').packages['node_modules/playwright-core'].version")"
have="$(node -p "try { require('$here/node_modules/playwright-core/package.json').version } catch { '' }")"
if [ "$wanted" != "$have" ]; then
  log "installing playwright-core $wanted into e2e/node_modules"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

log "cargo build -p gateway"
(cd "$root" && cargo build -p gateway)

log "browser tests (headless chromium)"
cd "$here"
GATEWAY_BIN="$target_dir/debug/gateway" CHROMIUM=/usr/bin/chromium node chat.test.mjs
