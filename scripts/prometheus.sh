#!/usr/bin/env bash
# Prometheus and promtool for the tests (a real server scrapes the API and the operator; promtool checks
# the chart's rules and dashboard queries): scripts/prometheus.sh path|version
#
#   path     install Debian's `prometheus` package when missing, then print the directory holding
#            `prometheus` and `promtool` (last line of stdout)
#   version  the same, then print what `prometheus --version` reports
#
# The package's own service is never used: the tests start `prometheus` with a config file of their own
# on a free port (tests/fixtures/prometheus.py). Override with VIVID_PROMETHEUS_DIR=/dir/with/both.
# The package is installed only when run as root (noninteractive); otherwise this fails with the command.
set -euo pipefail

die() { echo "prometheus: $*" >&2; exit 1; }
is_root() { [[ $(id -u) == 0 ]]; }

found() { [[ -x $1/prometheus && -x $1/promtool ]]; }

install_prometheus() {
  is_root || die "prometheus is missing: run 'sudo apt-get install prometheus' (or run this as root)"
  command -v apt-get >/dev/null || die "prometheus is missing and there is no apt-get: set VIVID_PROMETHEUS_DIR"
  echo "prometheus: installing prometheus" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: the package must not start its own server (the tests start theirs).
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  ((created)) && rm -f "$policy"
  # Stop a server the package may have started anyway (no systemd here: nothing, usually).
  pkill -x -u prometheus prometheus 2>/dev/null || true
}

prometheus_dir() {
  if [[ -n ${VIVID_PROMETHEUS_DIR:-} ]]; then
    found "$VIVID_PROMETHEUS_DIR" || die "VIVID_PROMETHEUS_DIR=$VIVID_PROMETHEUS_DIR lacks prometheus or promtool"
    echo "$VIVID_PROMETHEUS_DIR"
    return 0
  fi
  found /usr/bin || install_prometheus
  found /usr/bin || die "prometheus was installed but /usr/bin lacks prometheus or promtool"
  echo /usr/bin
}

case ${1:-} in
  path) prometheus_dir ;;
  version) dir=$(prometheus_dir) && "$dir/prometheus" --version 2>&1 | head -n 1 ;;
  *) die "usage: $0 path|version" ;;
esac
