#!/usr/bin/env bash
# run.sh is `make run`: on a fresh Debian machine, as root, it installs
# containerd and runc, starts a private containerd whose data persists under
# BERTH_RUN_DIR, makes sure the default workspace image is there (pulled from
# its registry where one is reachable, else built locally with debootstrap),
# and serves berth over streamable HTTP, printing the URL and the token.
#
# So that the README's client configs work as written after it, it also
# installs the binary as /usr/local/bin/berth and writes its settings to
# /etc/berth/config.yaml, the file a plain `berth serve --stdio` reads: an MCP
# client that starts berth itself then finds this containerd and these
# workspaces. A config.yaml that make run did not write (make install's, an
# admin's) is left alone, and run.sh says which flag stdio clients need.
set -euo pipefail
cd "$(dirname "$0")/.."

addr=${BERTH_HTTP:-127.0.0.1:8080}
run_dir=${BERTH_RUN_DIR:-/var/lib/berth-run}
image=${BERTH_DEFAULT_IMAGE:-docker.io/library/debian:bookworm-slim}
berth=/usr/local/bin/berth
config=$run_dir/config.yaml
# berth reads this path when no --config is given (internal/config.DefaultFile).
etc_config=/etc/berth/config.yaml
# The first line of the config written here; install.sh replaces a config that
# starts with it, and leaves every other one alone.
run_marker="# Written by berth's make run (scripts/run.sh)."

[ "$(id -u)" -eq 0 ] || {
	echo "run: make run needs root (it installs packages, runs containerd and manages containers)" >&2
	exit 1
}
scripts/containerd.sh install --with-debootstrap
mkdir -p "$run_dir"
# containerd keeps running after berth stops, so workspaces outlive it
# (stop it with: scripts/containerd.sh down "$run_dir/ctd", which deletes them).
scripts/containerd.sh up "$run_dir/ctd" >/dev/null
sock=$run_dir/ctd/containerd.sock

cat >"$config.tmp" <<YAML
$run_marker
# make install saves it as config.yaml.make-run and puts the service's in its place.
containerd: $sock
namespace: berth
state-dir: $run_dir/state
default-image: $image
YAML
mv -f "$config.tmp" "$config"
if [ ! -e "$etc_config" ] || [ "$(head -n 1 "$etc_config")" = "$run_marker" ]; then
	mkdir -p "${etc_config%/*}"
	install -m 0644 "$config" "$etc_config.tmp.$$"
	mv -f "$etc_config.tmp.$$" "$etc_config"
	stdio_flags=""
else
	echo "run: keeping $etc_config (not written by make run); it points berth elsewhere" >&2
	stdio_flags=" --config $config"
fi
# Replace, never rewrite in place: a berth already running from this path (the
# service, a stdio client) keeps its old binary until it restarts.
install -m 0755 bin/berth "$berth.tmp.$$"
mv -f "$berth.tmp.$$" "$berth"

ctr=(ctr --address "$sock" --namespace berth)
if ! "${ctr[@]}" images ls -q | grep -qx "$image"; then
	echo "run: pulling $image ..." >&2
	if ! timeout 120 "${ctr[@]}" images pull "$image" >/dev/null 2>&1; then
		echo "run: no registry reachable; building $image locally with debootstrap (a few minutes the first time) ..." >&2
		archive=$(mktemp /tmp/berth-image.XXXX.tar)
		BERTH="$berth" scripts/debian-image.sh "$archive" "$image"
		"$berth" image import --config "$config" "$archive"
		rm -f "$archive"
	fi
fi

"$berth" serve --config "$config" --http "$addr" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid"' INT TERM
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && break
	kill -0 "$pid" 2>/dev/null || { wait "$pid"; exit 1; }
	sleep 0.1
done
cat >&2 <<MSG

berth is serving MCP at  http://$addr/mcp
token (Authorization: Bearer ...):  $("$berth" token --config "$config")
token file:  $run_dir/state/token   (or: $berth token$stdio_flags)
settings:    $config
stdio clients (Claude Desktop, claude mcp add):  $berth serve --stdio$stdio_flags
Ctrl-C stops berth; workspaces keep running and are re-adopted next time.

MSG
wait "$pid"
