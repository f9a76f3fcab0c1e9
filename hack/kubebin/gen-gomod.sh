#!/usr/bin/env bash
# Regenerates hack/kubebin/go.mod+go.sum (kube-apiserver, kube-controller-manager) and
# hack/etcdbin/go.mod+go.sum (etcd) for the versions pinned in versions.env.
#
# k8s.io/kubernetes requires its ~31 staging modules (k8s.io/api, apimachinery, ...) at v0.0.0 and
# resolves them through `replace => ./staging/...` lines that do not apply to an importing module
# (kubernetes/kubernetes#79384). We read those lines from the release's own go.mod and replace each
# staging module with its matching v0.X.Y release. etcd's server module has relative replaces as well,
# so it gets a wrapper module of its own (kept separate so MVS cannot move kube's etcd client libs).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
etcd_dir=$(cd "$here/../etcdbin" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
export PATH="/usr/local/go/bin:$PATH" GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:--p=2}"

staging_version="v0.${KUBE_VERSION#v1.}"   # v1.35.4 -> v0.35.4

# --- kube wrapper -------------------------------------------------------------------------------
cd "$here"
rm -f go.mod go.sum
go mod init vividflow.dev/hack/kubebin >/dev/null 2>&1
kube_mod=$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[[ -f "$kube_mod" ]] || { echo "cannot find go.mod of k8s.io/kubernetes@${KUBE_VERSION}" >&2; exit 1; }
go_line=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$kube_mod")
go mod edit -go="$go_line" -require="k8s.io/kubernetes@${KUBE_VERSION}"
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$kube_mod")
[[ ${#staging[@]} -gt 20 ]] || { echo "found only ${#staging[@]} staging replaces in $kube_mod" >&2; exit 1; }
edits=()
for m in "${staging[@]}"; do edits+=("-replace=${m}=${m}@${staging_version}"); done
go mod edit "${edits[@]}" \
  -tool=k8s.io/kubernetes/cmd/kube-apiserver \
  -tool=k8s.io/kubernetes/cmd/kube-controller-manager
go mod tidy
echo "kubebin: k8s.io/kubernetes ${KUBE_VERSION}, ${#staging[@]} staging modules at ${staging_version}"

# --- etcd wrapper -------------------------------------------------------------------------------
cd "$etcd_dir"
rm -f go.mod go.sum
go mod init vividflow.dev/hack/etcdbin >/dev/null 2>&1
etcd_mod=$(go mod download -json "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
go_line=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$etcd_mod")
# The relative replaces (../api, ../client/v3, ...) point at sibling modules released at the same tag.
edits=()
for m in $(sed -n 's#^[[:space:]]*\(go\.etcd\.io/etcd/[A-Za-z0-9/._-]*\) => \.\./.*#\1#p' "$etcd_mod"); do
  edits+=("-require=${m}@${ETCD_VERSION}")
done
go mod edit -go="$go_line" -require="go.etcd.io/etcd/server/v3@${ETCD_VERSION}" "${edits[@]}" \
  -tool=go.etcd.io/etcd/server/v3
go mod tidy
echo "etcdbin: go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
