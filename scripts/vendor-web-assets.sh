#!/usr/bin/env bash
# Refreshes the web app's vendored, offline assets from pinned npm packages (run from anywhere):
#
#   scripts/vendor-web-assets.sh
#
#   vividflow/web/static/vendor/pico.min.css     @picocss/pico css/pico.min.css (MIT)
#   vividflow/web/static/vendor/LICENSE-pico.md  its LICENSE.md
#   vividflow/web/data/common-passwords.txt      @zxcvbn-ts/language-common src/passwords.json: the first
#                                                $PASSWORD_COUNT entries (frequency order), one per line
#   vividflow/web/data/LICENSE-zxcvbn-ts.md      its LICENSE.txt
#
# `npm pack` fetches each pinned tarball through the ordinary npm client into a temporary directory; nothing
# is installed and no CDN is involved at run time. The READMEs next to the files describe them; bump the
# versions here (and there) to update.
set -euo pipefail

PICO=@picocss/pico@2.1.1
# `npm view <package>@<version> dist.integrity`: each tarball is checked against its pin.
PICO_INTEGRITY=sha512-kIDugA7Ps4U+2BHxiNHmvgPIQDWPDU4IeU6TNRdvXQM1uZX+FibqDQT2xUOnnO2yq/LUHcwnGlu1hvf4KfXnMg==
ZXCVBN_COMMON=@zxcvbn-ts/language-common@4.1.3
ZXCVBN_COMMON_INTEGRITY=sha512-g2bg4skmlJG9aJqC/nWziZzgYpSe/f3rKeGobrkdFiOrfZVFqqzUgC6BUQWuX54Sua9j0Jxxt+1bf4f/Mal1Kg==
PASSWORD_COUNT=20000

die() { echo "vendor-web-assets: $*" >&2; exit 1; }
command -v npm >/dev/null || die "npm is needed (apt-get install npm)"
command -v python3 >/dev/null || die "python3 is needed"
command -v openssl >/dev/null || die "openssl is needed (apt-get install openssl)"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
static=$root/vividflow/web/static/vendor
data=$root/vividflow/web/data
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Fetches one package (checked against its integrity pin), unpacks it into $work/<name>/package and
# prints that directory.
unpack() {
  local spec=$1 integrity=$2 dir tarball actual
  dir=$work/$(echo "$spec" | tr '@/' '__')
  mkdir -p "$dir"
  tarball=$(cd "$dir" && npm pack --silent "$spec" | tail -n 1)
  [[ -f $dir/$tarball ]] || die "npm pack $spec produced no tarball"
  actual=sha512-$(openssl dgst -sha512 -binary "$dir/$tarball" | base64 -w 0)
  [[ $actual == "$integrity" ]] || die "$spec: tarball integrity $actual, expected $integrity"
  tar -xzf "$dir/$tarball" -C "$dir"
  echo "$dir/package"
}

mkdir -p "$static" "$data"

pico=$(unpack "$PICO" "$PICO_INTEGRITY")
install -m 644 "$pico/css/pico.min.css" "$static/pico.min.css"
install -m 644 "$pico/LICENSE.md" "$static/LICENSE-pico.md"
echo "vendor-web-assets: $PICO -> vividflow/web/static/vendor/pico.min.css"

common=$(unpack "$ZXCVBN_COMMON" "$ZXCVBN_COMMON_INTEGRITY")
install -m 644 "$common/LICENSE.txt" "$data/LICENSE-zxcvbn-ts.md"
python3 - "$common/src/passwords.json" "$data/common-passwords.txt" "$PASSWORD_COUNT" <<'PY'
import json
import sys

source, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(source, encoding="utf-8") as f:
    passwords = json.load(f)
if not isinstance(passwords, list) or len(passwords) < count:
    raise SystemExit(f"{source}: expected a list of at least {count} passwords")
kept = [str(p) for p in passwords[:count]]
bad = [p for p in kept if not p or "\n" in p or p != p.strip()]
if bad:
    raise SystemExit(f"{source}: unexpected entries {bad[:5]!r}")
with open(target, "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(kept) + "\n")
PY
echo "vendor-web-assets: $ZXCVBN_COMMON -> vividflow/web/data/common-passwords.txt" \
  "($(wc -l <"$data/common-passwords.txt") entries)"
