#!/usr/bin/env bash
# Chromium for the browser tests (tests/web/, driven by Playwright): scripts/browser.sh path|version
#
#   path     install Debian's `chromium` package when missing, then print the executable (last line of stdout)
#   version  the same, then print what that executable reports (`Chromium 1xx.0....`)
#
# Playwright's own browser download (`playwright install`) is never used: the tests launch the system
# Chromium through `executable_path`. Override with VIVID_CHROMIUM=/path/to/chromium.
# The package is installed only when run as root (noninteractive, like scripts/test-services.sh);
# otherwise this fails with the command to run.
set -euo pipefail

die() { echo "browser: $*" >&2; exit 1; }
is_root() { [[ $(id -u) == 0 ]]; }

find_chromium() {
  local candidate
  for candidate in chromium chromium-browser; do
    if command -v "$candidate" >/dev/null; then command -v "$candidate"; return 0; fi
  done
  [[ -x /usr/bin/chromium ]] && { echo /usr/bin/chromium; return 0; }
  return 1
}

install_chromium() {
  is_root || die "chromium is missing: run 'sudo apt-get install chromium' (or run this as root)"
  command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get: install Chromium and set VIVID_CHROMIUM"
  echo "browser: installing chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
}

chromium_path() {
  local exe
  if [[ -n ${VIVID_CHROMIUM:-} ]]; then
    [[ -x $VIVID_CHROMIUM ]] || die "VIVID_CHROMIUM=$VIVID_CHROMIUM is not an executable"
    echo "$VIVID_CHROMIUM"
    return 0
  fi
  if exe=$(find_chromium); then echo "$exe"; return 0; fi
  install_chromium
  exe=$(find_chromium) || die "chromium was installed but no executable was found"
  echo "$exe"
}

case ${1:-} in
  path) chromium_path ;;
  version) exe=$(chromium_path) && "$exe" --version ;;
  *) die "usage: $0 path|version" ;;
esac
