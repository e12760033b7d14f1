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

# Second run of the runtime-facing tests on containerd 2.x, built from
# source (cached) and run with the same runc. BERTH_SKIP_CONTAINERD2=1 skips it.
if [ "${BERTH_SKIP_CONTAINERD2:-}" = 1 ]; then
	echo "test: skipping the containerd 2.x run (BERTH_SKIP_CONTAINERD2=1)" >&2
	exit 0
fi
v2=${BERTH_CONTAINERD2_VERSION:-v2.4.2}
v2bin=${BERTH_CACHE_DIR:-$HOME/.cache/berth}/containerd-$v2
if [ ! -x "$v2bin/containerd" ] || [ ! -x "$v2bin/containerd-shim-runc-v2" ] || [ ! -x "$v2bin/ctr" ]; then
	echo "test: building containerd $v2 (once; cached in $v2bin)" >&2
	GOBIN=$v2bin go install -tags "no_btrfs no_devmapper no_zfs no_aufs" \
		"github.com/containerd/containerd/v2/cmd/containerd@$v2" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$v2" \
		"github.com/containerd/containerd/v2/cmd/ctr@$v2"
fi
ctd2=$(mktemp -d /tmp/berth-ctd2.XXXX)
trap 'scripts/containerd.sh down "$ctd2"; scripts/containerd.sh down "$ctd"' EXIT
PATH=$v2bin:$PATH CONTAINERD_BIN=$v2bin/containerd CTR_BIN=$v2bin/ctr scripts/containerd.sh up "$ctd2" >/dev/null
echo "test: second run on containerd $v2" >&2
BERTH_TEST_CONTAINERD="$ctd2/containerd.sock" PATH=$v2bin:$PATH \
	go test -count=1 -timeout 20m ${TESTFLAGS:-} ./e2e/ ./internal/testenv/
