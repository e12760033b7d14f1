#!/usr/bin/env bash
# containerd.sh runs a private containerd for berth's tests and benchmarks.
#
# Usage:
#   scripts/containerd.sh install [--with-debootstrap]
#   scripts/containerd.sh install-debootstrap
#   scripts/containerd.sh up DIR      # prints the socket path DIR/containerd.sock
#   scripts/containerd.sh down DIR
#
# The private daemon keeps everything (config, root, state, socket, log, pid)
# under DIR, so it never touches a system containerd and `down` can remove all
# of it. Keep DIR short, e.g. `mktemp -d /tmp/berth-ctd.XXXX`: unix socket
# paths are limited to 107 bytes and containerd's sockets live in DIR, so DIR
# may have at most 85.
#
# `up` is idempotent. `down` kills the tasks, the daemon and any shims and
# containers it left, unmounts what is mounted under DIR and removes DIR; it
# succeeds when nothing runs, and refuses a DIR that `up` did not create.
#
# Environment:
#   CONTAINERD_BIN            containerd binary to run (default: containerd on
#                             PATH). For a containerd 2.x run, put its
#                             containerd-shim-runc-v2 first on PATH as well.
#   CTR_BIN                   ctr binary used for health checks (default: ctr)
#   CONTAINERD_START_TIMEOUT  seconds `up` waits for the socket (default: 30)
#
# Limits of the isolation, by containerd's design rather than ours: shims put
# their sockets in /run/containerd/s (named by a hash that includes the
# address), and runc keeps container state in /run/containerd/runc/NAMESPACE.
# Two private daemons must therefore not use the same namespace and container
# ID at the same time; tests use a unique namespace each.
set -euo pipefail

prog=${0##*/}

die() {
	echo "$prog: $*" >&2
	exit 1
}

log() {
	echo "$prog: $*" >&2
}

usage() {
	cat >&2 <<EOF
usage: $prog install [--with-debootstrap]
       $prog install-debootstrap
       $prog up DIR
       $prog down DIR
EOF
	exit 2
}

# abspath prints DIR as an absolute path with symlinks resolved, without
# requiring it to exist, so that the paths written into the config agree with
# those the kernel shows in /proc.
abspath() {
	realpath -m -- "$1"
}

# marker is the first line of every config.toml this script writes; down
# removes only directories that carry it.
marker="# private containerd of berth's scripts/containerd.sh"

# ours tells whether DIR is absent, empty, or made by `up`.
ours() {
	[ ! -e "$1" ] || [ -z "$(ls -A "$1")" ] ||
		{ [ -f "$1/config.toml" ] && [ "$(head -n 1 "$1/config.toml")" = "$marker" ]; }
}

checkdir() {
	local dir=$1
	case $dir in
	/ | /tmp | /run | /var | /var/lib | "$HOME") die "refusing to use $dir as a containerd directory" ;;
	esac
	case $dir in
	*[[:space:]\"\'\\]*) die "DIR must not contain spaces, quotes or backslashes: $dir" ;;
	esac
}

# --- install -----------------------------------------------------------------

apt_updated=false

apt_install() {
	[ "$(id -u)" -eq 0 ] || die "installing $* needs root"
	if ! $apt_updated; then
		DEBIAN_FRONTEND=noninteractive apt-get update -q
		apt_updated=true
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

cmd_install() {
	local with_debootstrap=false
	while [ $# -gt 0 ]; do
		case $1 in
		--with-debootstrap) with_debootstrap=true ;;
		*) usage ;;
		esac
		shift
	done
	local missing=()
	# containerd and runc may come from other packages (containerd.io from
	# Docker's repository); a binary on PATH is good enough.
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	# Test images copy /bin/busybox into a rootfs without libc, so it must be
	# the static build, not Debian's dynamically linked busybox package.
	pkg_installed busybox-static || missing+=(busybox-static)
	# Bridge networking runs Debian's CNI plugins (bridge, host-local,
	# loopback) from /usr/lib/cni.
	pkg_installed containernetworking-plugins || missing+=(containernetworking-plugins)
	if $with_debootstrap; then
		command -v debootstrap >/dev/null || missing+=(debootstrap)
	fi
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		apt_install "${missing[@]}"
	fi
}

cmd_install_debootstrap() {
	[ $# -eq 0 ] || usage
	command -v debootstrap >/dev/null || apt_install debootstrap
}

# --- up ----------------------------------------------------------------------

# running prints the pid of DIR's containerd if it is alive.
running() {
	local dir=$1 pid
	[ -s "$dir/containerd.pid" ] || return 1
	pid=$(cat "$dir/containerd.pid")
	case $pid in '' | *[!0-9]*) return 1 ;; esac
	# A recycled pid must not pass for our daemon: check its command line.
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$dir/config.toml" || return 1
	echo "$pid"
}

answers() {
	timeout 5 "${CTR_BIN:-ctr}" --address "$1/containerd.sock" version >/dev/null 2>&1
}

write_config() {
	local dir=$1
	# Version 2 is read by containerd 1.6 and migrated by 2.x. The CRI plugin
	# is disabled (its 2.x parts too) because berth talks to containerd
	# directly and CRI would otherwise want CNI and a sandbox image. Debug and
	# metrics listeners stay off so that several daemons never race for a port.
	cat >"$dir/config.toml.tmp" <<EOF
$marker
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox",
]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
	mv "$dir/config.toml.tmp" "$dir/config.toml"
}

cmd_up() {
	[ $# -eq 1 ] || usage
	local dir
	dir=$(abspath "$1")
	checkdir "$dir"
	local sock="$dir/containerd.sock"
	# sun_path holds 108 bytes including the terminating NUL.
	if [ ${#sock} -gt 101 ]; then # room for the ".ttrpc" suffix
		die "socket path $sock is too long for a unix socket (${#sock} bytes, max 101); use a shorter DIR such as \$(mktemp -d /tmp/berth-ctd.XXXX)"
	fi
	local bin=${CONTAINERD_BIN:-containerd}
	command -v "$bin" >/dev/null || die "containerd binary '$bin' not found; run '$0 install' or set CONTAINERD_BIN"
	command -v "${CTR_BIN:-ctr}" >/dev/null || die "ctr not found; run '$0 install' or set CTR_BIN"

	if running "$dir" >/dev/null && answers "$dir"; then
		echo "$sock"
		return 0
	fi
	if pid=$(running "$dir"); then
		die "containerd (pid $pid) for $dir runs but does not answer on $sock; see $dir/containerd.log or run '$0 down $dir'"
	fi

	ours "$dir" || die "$dir is not empty and was not made by '$prog up'; use a new directory"
	mkdir -p "$dir"
	chmod 0711 "$dir"
	write_config "$dir"
	rm -f "$dir/containerd.pid"
	# setsid detaches the daemon from our session so that it outlives this
	# script and a Ctrl-C in the calling terminal.
	setsid "$bin" --config "$dir/config.toml" </dev/null >>"$dir/containerd.log" 2>&1 &
	local pid=$!
	echo "$pid" >"$dir/containerd.pid"

	local limit=${CONTAINERD_START_TIMEOUT:-30}
	local deadline=$((SECONDS + limit))
	while ! answers "$dir"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$dir/containerd.log" >&2 || true
			die "containerd exited during startup; log: $dir/containerd.log"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			tail -n 20 "$dir/containerd.log" >&2 || true
			die "containerd did not answer on $sock within ${limit}s (pid $pid still runs; stop it with '$0 down $dir')"
		fi
		sleep 0.1
	done
	echo "$sock"
}

# --- down --------------------------------------------------------------------

# pids_matching prints the pids of processes named $1 whose argv contains the
# word $2.
pids_matching() {
	local name=${1##*/} word=$2 p comm args
	name=${name:0:15} # the kernel truncates comm to 15 bytes
	for p in /proc/[0-9]*; do
		# read is a builtin: no fork for each of the host's processes.
		read -r comm 2>/dev/null <"$p/comm" || continue
		[ "$comm" = "$name" ] || continue
		args=$(tr '\0' '\n' 2>/dev/null <"$p/cmdline") || continue
		if grep -qxF -- "$word" <<<"$args"; then
			echo "${p#/proc/}"
		fi
	done
}

# wait_gone waits up to $1 tenths of a second for the pids that follow to exit.
wait_gone() {
	local n=$1 p alive
	shift
	while [ "$n" -gt 0 ]; do
		alive=false
		for p in "$@"; do
			kill -0 "$p" 2>/dev/null && alive=true
		done
		$alive || return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# stop_tasks kills every task through containerd itself, which also deletes
# runc's state and unmounts the rootfs. Best effort: down must work even when
# the daemon is wedged, so every call is bounded.
stop_tasks() {
	local dir=$1 ctr ns id
	ctr=("${CTR_BIN:-ctr}" --address "$dir/containerd.sock")
	for ns in $(timeout 10 "${ctr[@]}" namespaces ls -q 2>/dev/null); do
		for id in $(timeout 10 "${ctr[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
			timeout 10 "${ctr[@]}" -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
			timeout 10 "${ctr[@]}" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
		done
	done
}

stop_daemon() {
	local dir=$1 pids
	mapfile -t pids < <(pids_matching "${CONTAINERD_BIN:-containerd}" "$dir/config.toml")
	[ ${#pids[@]} -gt 0 ] || return 0
	kill -TERM "${pids[@]}" 2>/dev/null || true
	if ! wait_gone 100 "${pids[@]}"; then
		log "containerd ${pids[*]} ignored SIGTERM for 10s; killing"
		kill -KILL "${pids[@]}" 2>/dev/null || true
		wait_gone 50 "${pids[@]}" || die "containerd ${pids[*]} survived SIGKILL"
	fi
}

# stop_shims kills shims left behind by our daemon and the containers they
# supervise: a shim's direct children are the containers' init processes, and
# killing a PID namespace's init kills the namespace.
stop_shims() {
	local dir=$1 shims s kids=() sockets=() args ns id
	mapfile -t shims < <(pids_matching containerd-shim-runc-v2 "$dir/containerd.sock")
	[ ${#shims[@]} -gt 0 ] || return 0
	log "killing leftover shims ${shims[*]}"
	for s in "${shims[@]}"; do
		mapfile -t -O "${#kids[@]}" kids < <(cat 2>/dev/null /proc/"$s"/task/*/children | tr ' ' '\n' | grep . || true)
	done
	[ ${#kids[@]} -eq 0 ] || kill -KILL "${kids[@]}" 2>/dev/null || true
	for s in "${shims[@]}"; do
		# Forget runc's state for the container so that the same namespace
		# and ID can be reused later.
		args=$(tr '\0' '\n' 2>/dev/null <"/proc/$s/cmdline") || continue
		ns=$(grep -A1 -x -- -namespace <<<"$args" | sed -n 2p)
		id=$(grep -A1 -x -- -id <<<"$args" | sed -n 2p)
		if [ -z "$ns" ] || [ -z "$id" ]; then
			continue
		fi
		if command -v runc >/dev/null; then
			runc --root "/run/containerd/runc/$ns" delete -f "$id" >/dev/null 2>&1 || true
		fi
		# The shim's sockets are named by a hash of the address, namespace
		# and ID (containerd's shim.SocketAddress); a killed shim leaves them.
		sockets+=("$(shim_socket "$dir/containerd.sock/$ns/$id")")
		sockets+=("$(shim_socket "$dir/containerd.sock/$ns/$id/debug")")
	done
	kill -KILL "${shims[@]}" 2>/dev/null || true
	wait_gone 50 "${shims[@]}" || log "shims ${shims[*]} did not exit"
	rm -f "${sockets[@]}"
}

shim_socket() {
	local sum
	sum=$(printf '%s' "$1" | sha256sum)
	echo "/run/containerd/s/${sum%% *}"
}

# mounts_under prints mount points at or below $1, deepest first. Mountinfo
# escapes blanks and backslashes as octal; printf %b decodes them.
mounts_under() {
	local dir=$1 mp
	awk '{ print $5 }' /proc/self/mountinfo | while read -r mp; do
		mp=$(printf '%b' "$mp")
		case $mp in
		"$dir" | "$dir"/*) printf '%d %s\n' "$(tr -cd / <<<"$mp" | wc -c)" "$mp" ;;
		esac
	done | sort -rn -k1,1 | cut -d' ' -f2-
}

unmount_all() {
	local dir=$1 mp
	while read -r mp; do
		[ -n "$mp" ] || continue
		umount -l -- "$mp" 2>/dev/null || log "could not unmount $mp"
	done < <(mounts_under "$dir")
}

# forget_runc_namespaces removes the per-namespace directories runc leaves in
# the shared /run/containerd/runc; rmdir keeps those still in use.
forget_runc_namespaces() {
	local dir=$1 ns
	for ns in "$dir"/state/io.containerd.runtime.v2.task/*/; do
		[ -d "$ns" ] || continue
		ns=${ns%/}
		rmdir "/run/containerd/runc/${ns##*/}" 2>/dev/null || true
	done
}

cmd_down() {
	[ $# -eq 1 ] || usage
	local dir
	dir=$(abspath "$1")
	checkdir "$dir"
	# Refuse before touching anything: unmounting under a directory that is
	# not ours could pull mounts from under the host.
	ours "$dir" || die "$dir was not made by '$prog up'; not touching it"

	if running "$dir" >/dev/null && answers "$dir"; then
		stop_tasks "$dir"
	fi
	stop_daemon "$dir"
	stop_shims "$dir"
	[ -e "$dir" ] || return 0
	unmount_all "$dir"
	forget_runc_namespaces "$dir"

	if [ -n "$(mounts_under "$dir")" ]; then
		die "mounts remain under $dir; not removing it"
	fi
	# --one-file-system guards against a mount that appeared after the check.
	rm -rf --one-file-system -- "$dir"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
install) cmd_install "$@" ;;
install-debootstrap) cmd_install_debootstrap "$@" ;;
up) cmd_up "$@" ;;
down) cmd_down "$@" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
