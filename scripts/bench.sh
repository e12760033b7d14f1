#!/usr/bin/env bash
# bench.sh runs berth's benchmarks against a private containerd and prints
# each berth figure as a ratio to its baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# -p 1: the packages' benchmarks must not run at the same time and disturb
# each other's figures. BENCH picks benchmarks by name (default: all).
# internal/network's BenchmarkThroughput measures a bridge workspace against
# the host's root namespace in the same run.
# BenchmarkSnapshotCost runs on the Debian image that make run builds (the
# debootstrap tree is cached after the first build); on busybox where that
# cannot be built.
if echo BenchmarkSnapshotCost | grep -Eq -- "${BENCH:-.}"; then
	debian="$(dirname "$out")/berth-bench-debian.$$.tar"
	trap 'rm -f "$out" "$debian"' EXIT
	if BERTH="${BERTH_TEST_BINARY:-$PWD/bin/berth}" scripts/debian-image.sh "$debian" >&2; then
		export BERTH_BENCH_IMAGE_ARCHIVE=$debian
	else
		echo "bench: no Debian image; BenchmarkSnapshotCost runs on busybox" >&2
	fi
fi
scripts/with-containerd.sh go test -p 1 -run '^$' -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-20x}" -timeout 30m ./e2e/ ./internal/network/ | tee "$out"

echo
echo "== ratios (berth / baseline, lower is better) =="
awk '
/^Benchmark/ {
	n = split($1, parts, "/"); variant = parts[n]; sub(/-[0-9]+$/, "", variant)
	name = parts[1]; for (i = 2; i < n; i++) name = name "/" parts[i]
	for (i = 3; i < NF; i++) if ($(i+1) == "p50-ms") p50[name, variant] = $i; else if ($(i+1) == "p95-ms") p95[name, variant] = $i
	names[name] = 1
	# Throughput (higher is better) reports both sides and the ratio itself.
	tn = $1; sub(/-[0-9]+$/, "", tn)
	for (i = 3; i < NF; i++) if ($(i+1) == "workspace-MB/s") tput[tn] = $i; else if ($(i+1) == "root-MB/s") troot[tn] = $i; else if ($(i+1) == "ratio") tratio[tn] = $i
}
END {
	# The baseline is `ctr` for workspace operations and `direct` (the same
	# MCP server over plain stdio) for the MCP servers of bots.
	for (n in names) {
		base = ((n, "ctr") in p50) ? "ctr" : "direct"
		if (!((n, "berth") in p50) || !((n, base) in p50)) continue
		printf "%s: berth p50 %.2f ms, p95 %.2f ms; %s p50 %.2f ms, p95 %.2f ms; ratio p50 %.2f, p95 %.2f; added p50 %.2f ms, p95 %.2f ms\n",
			n, p50[n, "berth"], p95[n, "berth"], base, p50[n, base], p95[n, base],
			p50[n, "berth"] / p50[n, base], p95[n, "berth"] / p95[n, base],
			p50[n, "berth"] - p50[n, base], p95[n, "berth"] - p95[n, base]
	}
	for (n in tput)
		printf "%s: workspace %.0f MB/s, root namespace %.0f MB/s; ratio %.2f (workspace / root, higher is better; target >= 0.8)\n",
			n, tput[n], troot[n], tratio[n]
}' "$out"

# BenchmarkSnapshotCost as issue 13's table.
awk '
/^BenchmarkSnapshotCost\// {
	split($1, parts, "/"); earlier = parts[2]; change = parts[3]; sub(/-[0-9]+$/, "", change)
	sub(/^earlier-/, "", earlier); sub(/^change-/, "", change)
	for (i = 3; i < NF; i++) v[$(i+1)] = $i
	if (!header++) {
		print "\n== snapshot_create cost =="
		print "| earlier writes | change | paused p50 / p95 | total p50 | disk of the version |"
		print "|---|---|---|---|---|"
	}
	printf "| %s | %s | %.0f / %.0f ms | %.0f ms | %.2f MB |\n", earlier, change, v["pause-p50-ms"], v["pause-p95-ms"], v["total-p50-ms"], v["disk-bytes"] / 1e6
}
/^SnapshotCostCompaction / { sub(/^SnapshotCostCompaction /, "one compaction with "); compactions = compactions $0 "\n" }
END { printf "%s", compactions }
' "$out"
