#!/usr/bin/env bash
# Builds (once) and caches kube-apiserver, kube-controller-manager and etcd for the test control plane,
# then prints the directory that holds them. Idempotent: when the cached binaries report the pinned
# versions it prints the directory and exits in well under a second.
#
#   hack/kubebin/build.sh              build if needed, print the bin directory (last line of stdout)
#   hack/kubebin/build.sh --print-dir  print the bin directory only (no check, no build)
#   hack/kubebin/build.sh --check      exit 0 if the cached binaries are usable, 1 otherwise
#
# Environment: VIVID_KUBE_CACHE (default ~/.cache/vividflow/kube), GOFLAGS (default -p=2),
# VIVID_KUBE_NICE (default 19). GOCACHE/GOMODCACHE are left at Go's defaults so rebuilds are incremental.
# A cold build takes 10-25 minutes on 2 cores; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
etcd_mod_dir=$(cd "$here/../etcdbin" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${VIVID_KUBE_CACHE:-$HOME/.cache/vividflow/kube}
bin_dir="$cache_root/${KUBE_VERSION}-etcd${ETCD_VERSION#v}/bin"

binary_ok() {  # name expected-substring-of---version
  local out
  [[ -x "$bin_dir/$1" ]] || return 1
  out=$("$bin_dir/$1" --version 2>/dev/null) || return 1
  [[ "$out" == *"$2"* ]]
}
kube_ok() {
  binary_ok kube-apiserver "Kubernetes ${KUBE_VERSION}" &&
    binary_ok kube-controller-manager "Kubernetes ${KUBE_VERSION}"
}
etcd_ok() { binary_ok etcd "etcd Version: ${ETCD_VERSION#v}"; }

case "${1:-}" in
  --print-dir) echo "$bin_dir"; exit 0 ;;
  --check) kube_ok && etcd_ok; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--print-dir|--check]" >&2; exit 2 ;;
esac

if kube_ok && etcd_ok; then echo "$bin_dir"; exit 0; fi

mkdir -p "$bin_dir"
# One build at a time per cache directory (parallel test runs or make jobs may call this together).
exec 9>"$bin_dir/../.build.lock"
if command -v flock >/dev/null; then flock 9; fi
if kube_ok && etcd_ok; then echo "$bin_dir"; exit 0; fi

export PATH="/usr/local/go/bin:$PATH"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--p=2}"
go_cmd=(nice -n "${VIVID_KUBE_NICE:-19}" go)
grep -q "k8s.io/kubernetes ${KUBE_VERSION}" "$here/go.mod" ||
  { echo "hack/kubebin/go.mod does not pin k8s.io/kubernetes ${KUBE_VERSION}; run gen-gomod.sh" >&2; exit 1; }
grep -q "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}" "$etcd_mod_dir/go.mod" ||
  { echo "hack/etcdbin/go.mod does not pin etcd ${ETCD_VERSION}; run gen-gomod.sh" >&2; exit 1; }

tmp=$(mktemp -d "$bin_dir/../.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

if ! etcd_ok; then
  echo ">>> building etcd ${ETCD_VERSION}" >&2
  (cd "$etcd_mod_dir" && "${go_cmd[@]}" build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  mv -f "$tmp/etcd" "$bin_dir/etcd"
  echo ">>> etcd done after $((SECONDS - start)) s" >&2
fi


if ! kube_ok; then
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  # Build date = the release's publication time from the module proxy, so rebuilds are reproducible.
  build_date=$(cd "$here" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' \
    k8s.io/kubernetes)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date:-1970-01-01T00:00:00Z}"
  done
  echo ">>> building kube-apiserver, kube-controller-manager ${KUBE_VERSION} (GOFLAGS=$GOFLAGS)" >&2
  (cd "$here" && "${go_cmd[@]}" build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags" \
    -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
  mv -f "$tmp/kube-apiserver" "$tmp/kube-controller-manager" "$bin_dir/"
  echo ">>> kube binaries done after $((SECONDS - start)) s" >&2
fi

kube_ok && etcd_ok || { echo "built binaries do not report the pinned versions" >&2; exit 1; }
echo "$bin_dir"
