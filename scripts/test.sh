#!/usr/bin/env bash
# test.sh runs berth's whole test suite against a private containerd:
# installs containerd and runc if missing, starts the daemon under a temp
# dir, runs vet and every test, and always stops the daemon again.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/containerd.sh install
ctd=$(mktemp -d /tmp/berth-ctd.XXXX)
trap 'scripts/containerd.sh down "$ctd"' EXIT
scripts/containerd.sh up "$ctd" >/dev/null

export BERTH_TEST_CONTAINERD="$ctd/containerd.sock"
export BERTH_TEST_BINARY="$PWD/bin/berth"

make --no-print-directory vet
go test -count=1 -timeout 20m ${TESTFLAGS:-} ./...
