#!/usr/bin/env bash
# bench.sh runs berth's benchmarks against a private containerd and prints
# each berth figure as a ratio to its baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT
scripts/with-containerd.sh go test -run '^$' -bench . -benchtime "${BENCHTIME:-20x}" -timeout 30m ./e2e/ | tee "$out"

echo
echo "== ratios (berth / baseline, lower is better) =="
awk '
/^Benchmark/ {
	n = split($1, parts, "/"); variant = parts[n]; sub(/-[0-9]+$/, "", variant)
	name = parts[1]; for (i = 2; i < n; i++) name = name "/" parts[i]
	for (i = 3; i < NF; i++) if ($(i+1) == "p50-ms") p50[name, variant] = $i; else if ($(i+1) == "p95-ms") p95[name, variant] = $i
	names[name] = 1
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
}' "$out"
