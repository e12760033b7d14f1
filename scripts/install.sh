#!/usr/bin/env bash
# install.sh is `make install`: it installs berth to run as a systemd service
# on this host, using the host's containerd, and starts it.
#
#   PREFIX/bin/berth                          the static binary
#   PREFIX/lib/systemd/system/berth.service   `berth serve --http`, after containerd
#   PREFIX/share/doc/berth/config.example.yaml
#   /etc/berth/config.yaml                    from the example, unless one exists
#
# /etc/berth/config.yaml is the file every berth command reads by default, so
# the service and a `berth serve --stdio` in an MCP client's config agree on
# containerd, namespace and state directory. An existing config is kept, except
# the one `make run` wrote (it points at make run's private containerd, which
# does not start at boot): that one is saved as config.yaml.make-run.
#
# With DESTDIR set, files are laid out under DESTDIR and nothing else happens
# (no packages, no systemctl): for packaging and for the tests.
#
# Environment: DESTDIR, PREFIX (default /usr/local), BIN (the built binary,
# default bin/berth), UNITDIR (default PREFIX/lib/systemd/system).
set -euo pipefail
cd "$(dirname "$0")/.."

prog=install
log() { echo "$prog: $*" >&2; }
die() {
	log "$*"
	exit 1
}

destdir=${DESTDIR:-}
prefix=${PREFIX:-/usr/local}
bin=${BIN:-bin/berth}
unitdir=${UNITDIR:-$prefix/lib/systemd/system}
# berth reads this path when no --config is given (internal/config.DefaultFile).
etc_config=/etc/berth/config.yaml
# The first line of the config scripts/run.sh writes.
run_marker="# Written by berth's make run (scripts/run.sh)."

case $prefix in /*) ;; *) die "PREFIX must be absolute, got $prefix" ;; esac
[ -x "$bin" ] || die "$bin is missing; run make build first"
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
	die "installing into / needs root (or set DESTDIR to lay the files out elsewhere)"
fi

# put SRC DST MODE installs atomically, so a running berth (or one starting
# from the unit) never sees a half-written file.
put() {
	local src=$1 dst=$2 mode=$3
	mkdir -p "$(dirname "$dst")"
	install -m "$mode" "$src" "$dst.tmp.$$"
	mv -f "$dst.tmp.$$" "$dst"
}

put "$bin" "$destdir$prefix/bin/berth" 0755
unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed "s|/usr/local/bin/berth|$prefix/bin/berth|g" contrib/systemd/berth.service >"$unit"
put "$unit" "$destdir$unitdir/berth.service" 0644
put contrib/config.example.yaml "$destdir$prefix/share/doc/berth/config.example.yaml" 0644

config=$destdir$etc_config
if [ -e "$config" ] && [ "$(head -n 1 "$config")" = "$run_marker" ]; then
	mv -f "$config" "$config.make-run"
	log "saved make run's $etc_config (its private containerd) as $etc_config.make-run"
fi
if [ -e "$config" ]; then
	log "keeping $etc_config; the example is in $prefix/share/doc/berth/config.example.yaml"
else
	put contrib/config.example.yaml "$config" 0644
	log "wrote $etc_config"
fi

[ -z "$destdir" ] || exit 0

missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -d /run/systemd/system ]; then
	cat >&2 <<MSG

$prog: systemd is not running here (a container?), so berth was not started.
Where systemd runs: systemctl enable --now containerd berth
Here, by hand: containerd & then $prefix/bin/berth serve --http 127.0.0.1:8080
MSG
	exit 0
fi

systemctl daemon-reload
systemctl enable --now containerd.service
systemctl enable berth.service
# restart, not start: an upgrade must run the binary just installed.
systemctl restart berth.service
addr=127.0.0.1:8080
[ ! -r /etc/default/berth ] || addr=$(. /etc/default/berth && echo "${BERTH_HTTP:-$addr}")
for _ in $(seq 100); do
	systemctl is-active --quiet berth.service || break
	(exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && break
	sleep 0.1
done
if ! systemctl is-active --quiet berth.service; then
	journalctl -u berth.service -n 20 --no-pager >&2 || true
	die "berth.service did not start; see journalctl -u berth"
fi
cat >&2 <<MSG

berth runs as berth.service (enabled: it starts at boot, after containerd).
MCP endpoint:  http://$addr/mcp
token:         sudo $prefix/bin/berth token
settings:      $etc_config   logs: journalctl -u berth

MSG
