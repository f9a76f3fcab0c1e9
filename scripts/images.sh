#!/usr/bin/env bash
# The vividflow-api and vividflow-runner-veo images, built with buildah from the Dockerfile as users
# build it: scripts/images.sh build|env|sizes|check
#
#   build   build both images unless images of the same sources exist (the tag is a hash of the
#           Dockerfile, .dockerignore, pyproject.toml, README.md and vividflow/), then print
#           "api=<ref>" and "runner-veo=<ref>" (the last two lines of stdout)
#   env     the same, then print `export VIVID_IMAGE_API=… VIVID_IMAGE_RUNNER_VEO=…` for eval
#   sizes   the same, then print each image's size in MB
#   check   the other targets (runner, runner-cpu, runner-dev), each built with `buildah bud --layers
#           --target` as far as this machine allows; one line per target on stdout:
#             "<target>: built"  or  "<target>: stopped at [<stage>/<stages>] STEP <n>/<m>: <instruction>
#             | needs <what> | <buildah's or pip's reason>"
#           Exit 1 when a target stops anywhere but at a step that needs the CUDA base image (a
#           registry) or the PyTorch CPU wheel index. VIVID_CUDA_IMAGE and VIVID_TORCH_CPU_INDEX_URL
#           name stand-ins that let the builds go further.
#
# The Dockerfile's base, PYTHON_IMAGE (python:3.11-slim-bookworm), comes from a registry. When it
# cannot be pulled (no registry reachable, as on the test machines), a stand-in with the same
# Python (3.11) on the same Debian (bookworm) is made once with mmdebstrap from Debian's packages:
# localhost/vividflow-pybase:bookworm. VIVID_PYTHON_IMAGE names another base.
#
# Tools: buildah, podman, runc and mmdebstrap from Debian's packages, installed when missing and run
# as root. buildah runs with chroot isolation and the host's network (no user namespaces or bridges
# needed) and the host's CA bundle and pip configuration mounted read-only, so that pip reaches
# the package index the host reaches.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_BASE=localhost/vividflow-pybase:bookworm
REGISTRY_BASE=docker.io/library/python:3.11-slim-bookworm
PACKAGES=(buildah podman runc mmdebstrap)

die() { echo "images: $*" >&2; exit 1; }
say() { echo "images: $*" >&2; }

ensure_tools() {
  local missing=() tool
  for tool in "${PACKAGES[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}'"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A hash of everything the two targets' build context holds (.dockerignore's allow-list).
source_hash() {
  cd "$ROOT"
  {
    sha256sum Dockerfile .dockerignore pyproject.toml README.md
    find vividflow -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

base_image() {
  if [[ -n ${VIVID_PYTHON_IMAGE:-} ]]; then echo "$VIVID_PYTHON_IMAGE"; return; fi
  if podman image exists "$REGISTRY_BASE"; then echo "$REGISTRY_BASE"; return; fi
  if podman image exists "$LOCAL_BASE"; then echo "$LOCAL_BASE"; return; fi
  if timeout 30 podman pull -q "$REGISTRY_BASE" >/dev/null 2>&1; then echo "$REGISTRY_BASE"; return; fi
  say "$REGISTRY_BASE cannot be pulled: making $LOCAL_BASE with mmdebstrap (Python 3.11, bookworm)"
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$work/base.tar" >&2
  podman import --quiet "$work/base.tar" "$LOCAL_BASE" >/dev/null
  echo "$LOCAL_BASE"
}

build_target() {
  local target=$1 tag=$2 base=$3
  if podman image exists "$tag"; then say "$tag exists (same sources)"; return; fi
  local mounts=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
  [[ -f /etc/pip.conf ]] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
  say "building $tag (target $target, base $base)"
  local started=$SECONDS
  buildah bud --quiet --isolation chroot --network host --layers "${mounts[@]}" \
    --build-arg "PYTHON_IMAGE=$base" --target "$target" -t "$tag" "$ROOT" >&2
  say "built $tag in $((SECONDS - started)) s"
}

# Earlier builds (other source hashes) of our two images: their own layers go, shared ones stay.
prune_earlier() {
  local keep=$1 ref
  podman images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/vividflow-(api|runner-veo):src-' |
    { grep -v ":src-$keep\$" || true; } | while read -r ref; do podman rmi --force "$ref" >/dev/null || true; done
}

build() {
  ensure_tools
  local hash base
  hash=$(source_hash)
  API_IMAGE=localhost/vividflow-api:src-$hash
  RUNNER_VEO_IMAGE=localhost/vividflow-runner-veo:src-$hash
  if ! podman image exists "$API_IMAGE" || ! podman image exists "$RUNNER_VEO_IMAGE"; then
    base=$(base_image)
    build_target api "$API_IMAGE" "$base"
    build_target runner-veo "$RUNNER_VEO_IMAGE" "$base"
  fi
  prune_earlier "$hash"
}

size_mb() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%d", $1 / 1000000}'; }

# buildah and podman refuse short names such as the Dockerfile's nvidia/cuda:… unless registries.conf
# names unqualified-search registries (Debian's names none): qualify them as Docker does.
qualified() {
  local ref=$1 first=${1%%/*}
  if [[ $ref != */* ]]; then echo "docker.io/library/$ref"
  elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then echo "$ref"
  else echo "docker.io/$ref"; fi
}

dockerfile_arg() { sed -n "s/^ARG $1=//p" "$ROOT/Dockerfile" | head -n 1; }

# One target as far as it builds; its line (see the usage above). pip gives up after one retry.
check_target() {
  local target=$1 base=$2 cuda=$3 torch_index=$4 work=$5 log step reason needs=""
  log="$work/$target.log"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nretries = 1\ntimeout = 15\n' >"$work/pip.conf"
  say "checking target $target"
  if buildah bud --isolation chroot --network host --layers -v /etc/ssl/certs:/etc/ssl/certs:ro \
    -v "$work/pip.conf:/etc/pip.conf:ro" --build-arg "PYTHON_IMAGE=$base" --build-arg "CUDA_IMAGE=$cuda" \
    --build-arg "TORCH_CPU_INDEX_URL=$torch_index" --target "$target" "$ROOT" >"$log" 2>&1; then
    echo "$target: built"
    return 0
  fi
  step=$(grep -E '^\[[0-9]+/[0-9]+\] STEP [0-9]+/[0-9]+: ' "$log" | tail -n 1 || true)
  reason=$({ grep -oE 'lookup [^ ]+ on [^ ]+ no such host|Failed to establish a new connection: [^'"'"'"]+' "$log" ||
    grep -E '^(ERROR|Error): ' "$log"; } | head -n 1 | cut -c1-200 || true)
  if [[ $step == *": FROM $cuda"* ]]; then needs="the CUDA base image $cuda"
  elif [[ $step == *'${TORCH_CPU_INDEX_URL}'* ]]; then needs="the PyTorch CPU wheel index $torch_index"
  fi
  echo "$target: stopped at ${step:-its first step} | needs ${needs:-nothing unreachable} | $reason"
  [[ -n $needs ]] || { say "$target stopped at a step this machine can build: see $log"; return 1; }
}

check() {
  ensure_tools
  local base cuda torch_index work target failed=0
  base=$(base_image)
  cuda=${VIVID_CUDA_IMAGE:-$(qualified "$(dockerfile_arg CUDA_IMAGE)")}
  torch_index=${VIVID_TORCH_CPU_INDEX_URL:-$(dockerfile_arg TORCH_CPU_INDEX_URL)}
  work=$(mktemp -d)
  for target in runner runner-cpu runner-dev; do
    check_target "$target" "$base" "$cuda" "$torch_index" "$work" || failed=1
  done
  ((failed == 0)) && rm -rf "$work"
  return "$failed"
}

case ${1:-build} in
  build) build; echo "api=$API_IMAGE"; echo "runner-veo=$RUNNER_VEO_IMAGE" ;;
  env) build; echo "export VIVID_IMAGE_API=$API_IMAGE VIVID_IMAGE_RUNNER_VEO=$RUNNER_VEO_IMAGE" ;;
  sizes) build; echo "vividflow-api $(size_mb "$API_IMAGE") MB"; echo "vividflow-runner-veo $(size_mb "$RUNNER_VEO_IMAGE") MB" ;;
  check) check ;;
  *) die "usage: scripts/images.sh build|env|sizes|check" ;;
esac
