#!/usr/bin/env bash
# run.sh is `make run`: on a fresh Debian machine, as root, it installs
# containerd and runc, starts a private containerd whose data persists under
# BERTH_RUN_DIR, makes sure the default workspace image is there (pulled from
# its registry where one is reachable, else built locally with debootstrap),
# and serves berth over streamable HTTP, printing the URL and the token.
set -euo pipefail
cd "$(dirname "$0")/.."

addr=${BERTH_HTTP:-127.0.0.1:8080}
run_dir=${BERTH_RUN_DIR:-/var/lib/berth-run}
image=${BERTH_DEFAULT_IMAGE:-docker.io/library/debian:bookworm-slim}
berth=$PWD/bin/berth

scripts/containerd.sh install --with-debootstrap
mkdir -p "$run_dir"
# containerd keeps running after berth stops, so workspaces outlive it
# (stop it with: scripts/containerd.sh down "$run_dir/ctd", which deletes them).
scripts/containerd.sh up "$run_dir/ctd" >/dev/null

export BERTH_CONTAINERD="$run_dir/ctd/containerd.sock"
export BERTH_STATE_DIR="$run_dir/state"
export BERTH_DEFAULT_IMAGE="$image"
ctr=(ctr --address "$BERTH_CONTAINERD" --namespace berth)

if ! "${ctr[@]}" images ls -q | grep -qx "$image"; then
	echo "run: pulling $image ..." >&2
	if ! timeout 120 "${ctr[@]}" images pull "$image" >/dev/null 2>&1; then
		echo "run: no registry reachable; building $image locally with debootstrap (a few minutes the first time) ..." >&2
		archive=$(mktemp /tmp/berth-image.XXXX.tar)
		BERTH="$berth" scripts/debian-image.sh "$archive" "$image"
		"$berth" image import "$archive"
		rm -f "$archive"
	fi
fi

"$berth" serve --http "$addr" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid"' INT TERM
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && break
	kill -0 "$pid" 2>/dev/null || { wait "$pid"; exit 1; }
	sleep 0.1
done
cat >&2 <<MSG

berth is serving MCP at  http://$addr/mcp
token (Authorization: Bearer ...):  $(cat "$BERTH_STATE_DIR/token")
token file:  $BERTH_STATE_DIR/token
Ctrl-C stops berth; workspaces keep running and are re-adopted next time.

MSG
wait "$pid"
