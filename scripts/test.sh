#!/usr/bin/env bash
# test.sh runs berth's whole test suite against a private containerd
# (Debian's), then the runtime-facing tests again on containerd 2.x built
# from source. BERTH_SKIP_CONTAINERD2=1 skips the second run.
set -euo pipefail
cd "$(dirname "$0")/.."

make --no-print-directory vet
# contrib's tests check the systemd unit with systemd-analyze verify; a Debian
# container has no systemd package, so install it (about 3 MB) rather than
# leave the unit unchecked.
if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" -eq 0 ]; then
	echo "test: installing systemd for systemd-analyze" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd
fi
# The console's browser tests (e2e/console_test.go) drive Debian's chromium
# headless.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" -eq 0 ]; then
	echo "test: installing chromium for the console's browser tests" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi
scripts/with-containerd.sh go test -count=1 -timeout 20m ${TESTFLAGS:-} ./...

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
echo "test: second run on containerd $v2" >&2
PATH=$v2bin:$PATH CONTAINERD_BIN=$v2bin/containerd CTR_BIN=$v2bin/ctr \
	scripts/with-containerd.sh go test -count=1 -timeout 20m ${TESTFLAGS:-} ./e2e/ ./internal/testenv/
