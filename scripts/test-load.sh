#!/usr/bin/env bash
# test-load.sh [CMD...] runs CMD (by default scripts/test.sh, the whole
# suite) while a CPU hog keeps every core busy, as other work on a shared
# machine does: tests that wait on conditions pass, tests that rely on timing
# (a sleep as synchronisation, a short deadline, a ticker) fail here.
# LOAD_RUNS=N runs CMD N times in a row and stops at the first failure.
# LOAD_HOGS=N sets the number of busy loops (default: one per core).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${LOAD_RUNS:-1}
nhogs=${LOAD_HOGS:-$(nproc)}
if [ $# -eq 0 ]; then
	set -- scripts/test.sh
fi

hogs=()
stop_hogs() {
	for pid in "${hogs[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${hogs[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap stop_hogs EXIT
for ((i = 0; i < nhogs; i++)); do
	# A busy loop in a subshell of its own: no child to leave behind.
	(while :; do :; done) &
	hogs+=("$!")
done
echo "test-load: $nhogs busy loops (pids ${hogs[*]}) on $(nproc) cores; running: $*" >&2

for ((run = 1; run <= runs; run++)); do
	start=$(date +%s)
	if ! "$@"; then
		echo "test-load: run $run of $runs FAILED after $(($(date +%s) - start))s" >&2
		exit 1
	fi
	echo "test-load: run $run of $runs passed in $(($(date +%s) - start))s" >&2
done
