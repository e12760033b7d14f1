#!/usr/bin/env bash
# debian-image.sh builds an OCI image archive of a minimal Debian bookworm, for
# full-Debian workspaces on hosts that cannot reach a registry.
#
# Usage:
#   scripts/debian-image.sh OUT_ARCHIVE [REF]
#
# REF defaults to docker.io/library/debian:bookworm-slim. The archive is made
# with `berth image pack`, so import it with `ctr images import OUT_ARCHIVE` or
# berth itself.
#
# The debootstrap tree is built once (a few minutes) and cached as a tarball;
# later runs only unpack and pack it.
#
# Environment:
#   BERTH               berth binary (default: ./bin/berth)
#   BERTH_CACHE_DIR     cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/berth)
#   DEBIAN_MIRROR       mirror for debootstrap (default: http://deb.debian.org/debian)
#   DEBIAN_SUITE        suite (default: bookworm)
#
# Needs root: debootstrap chroots, and the tree must keep its owners.
set -euo pipefail

prog=${0##*/}
die() {
	echo "$prog: $*" >&2
	exit 1
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $prog OUT_ARCHIVE [REF]" >&2
	exit 2
fi
out=$1
ref=${2:-docker.io/library/debian:bookworm-slim}
berth=${BERTH:-./bin/berth}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${BERTH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and file ownership)"
[ -x "$berth" ] || command -v "$berth" >/dev/null || die "berth binary '$berth' not found; build it or set BERTH"

arch=$(dpkg --print-architecture)
tarball="$cache/debian-$suite-minbase-$arch.tar.gz"

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-debian.XXXXXX")
cleanup() {
	# debootstrap mounts proc and sys in the target; if it was interrupted
	# they may still be there, and rm must never descend into them.
	awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r mp; do
		umount -l "$mp" 2>/dev/null || true
	done
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT

if [ ! -s "$tarball" ]; then
	"$(dirname "$0")/containerd.sh" install-debootstrap
	echo "$prog: debootstrapping $suite ($arch) from $mirror; this takes a few minutes" >&2
	debootstrap --variant=minbase --arch="$arch" "$suite" "$work/build" "$mirror" >"$work/debootstrap.log" 2>&1 || {
		tail -n 30 "$work/debootstrap.log" >&2
		die "debootstrap failed"
	}
	# Trim what an image does not need and what would differ between runs:
	# downloaded packages and indexes (apt update refetches them) and logs.
	rm -rf "$work/build"/var/cache/apt/archives/*.deb \
		"$work/build"/var/cache/apt/*.bin \
		"$work/build"/var/lib/apt/lists/* \
		"$work/build"/var/log/* \
		"$work/build"/tmp/* "$work/build"/var/tmp/*
	mkdir -p "$work/build/var/lib/apt/lists/partial"
	# Host-specific files that the runtime or berth provides per workspace.
	rm -f "$work/build/etc/hostname" "$work/build/etc/resolv.conf"
	mkdir -p "$cache"
	tar --numeric-owner --xattrs --xattrs-include='security.capability' \
		-C "$work/build" -czf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	rm -rf --one-file-system "$work/build"
fi

mkdir "$work/rootfs"
tar --numeric-owner --xattrs --xattrs-include='security.capability' \
	-C "$work/rootfs" -xpzf "$tarball"
"$berth" image pack --rootfs "$work/rootfs" --ref "$ref" --out "$out"
echo "$prog: wrote $ref to $out" >&2
