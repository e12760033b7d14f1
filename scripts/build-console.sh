#!/usr/bin/env bash
# build-console.sh bundles the web console (web/) into console/dist, which
# `go build` embeds. Its packages come from npm with the versions pinned in
# web/package-lock.json; `npm ci` runs only when web/node_modules is missing
# or older than the lockfile.
set -euo pipefail
cd "$(dirname "$0")/../web"

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "build-console: node and npm are needed (apt-get install nodejs npm)" >&2
		exit 1
	fi
	echo "build-console: installing nodejs and npm" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi
# npm ci writes node_modules/.package-lock.json last.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
	npm ci --no-audit --no-fund --loglevel=error
fi
node build.mjs
