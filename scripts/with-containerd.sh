#!/usr/bin/env bash
# with-containerd.sh CMD... runs CMD with a private containerd that lives as
# long as CMD: installs containerd and runc if missing, starts the daemon
# under a temp dir, exports BERTH_TEST_CONTAINERD (its socket) and
# BERTH_TEST_BINARY (the built berth), and always stops it again.
# CONTAINERD_BIN / CTR_BIN pick another containerd, as for containerd.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/containerd.sh install
ctd=$(mktemp -d /tmp/berth-ctd.XXXX)
trap 'scripts/containerd.sh down "$ctd"' EXIT
scripts/containerd.sh up "$ctd" >/dev/null

export BERTH_TEST_CONTAINERD="$ctd/containerd.sock"
# The berth processes the tests start must not read this host's
# /etc/berth/config.yaml (left by make run or make install): an empty
# BERTH_CONFIG reads no config file.
export BERTH_CONFIG=
export BERTH_TEST_BINARY="${BERTH_TEST_BINARY:-$PWD/bin/berth}"
"$@"
