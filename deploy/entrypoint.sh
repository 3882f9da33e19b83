#!/bin/sh
# Entrypoint of the jsheets-runtime image: `jsheets-runtime "$@"`, `serve` by default.
#
# Before a command that runs sandboxes (every command but eval, bench-service, config,
# access-list, help and version), it makes the container's own cgroup writable for the
# node, which creates one child cgroup per sandbox below it (what `Delegate=yes` does in
# deploy/jsheets-runtime.service). Docker mounts /sys/fs/cgroup read-only unless the
# container is privileged; this needs CAP_SYS_ADMIN, which the sandbox needs anyway.
#
# - cgroup v2: the node must sit at the root of a cgroup namespace of its own
#   (`cgroup: private`, Docker's default on v2 hosts) so that the cgroup filesystem it
#   sees and may write is its container's subtree and nothing above it. If the container
#   was started in the host's cgroup namespace, this script creates one (unshare) first.
#   It then replaces the read-only mount by a fresh, writable cgroup2 mount made in that
#   namespace: it shows only that subtree, and with the `nsdelegate` mount option
#   (systemd hosts) the limits Docker set on the container itself stay out of reach.
# - cgroup v1: Docker bind-mounts the container's own subtree of each controller; those
#   mounts are made writable in place.
#
# If that fails the node starts anyway and refuses to run sandboxes with a clear error
# (it fails closed).
#
# JSHEETS_RUNTIME_TEST_RUNTIMES_AT_START=1 runs `jsheets-runtime runtime test NAME` for
# every installed runtime before the command and stops the container if one fails: the
# image build could not run the runtimes (no sandboxes in `docker build`), so this is
# where they are first really run.
#
# Nothing here prints the environment, the configuration or the arguments: they may
# hold secrets (monitoring.influx.authToken, passwords).
set -eu

BIN=jsheets-runtime

# Not a configuration key: every jsheets-runtime command below would warn about an
# unknown JSHEETS_RUNTIME_* variable. Kept under another name (also across the re-exec
# in a new cgroup namespace) and removed before the command runs.
if [ -n "${JSHEETS_RUNTIME_TEST_RUNTIMES_AT_START+set}" ]; then
	JSHEETS_ENTRYPOINT_TEST_RUNTIMES=$JSHEETS_RUNTIME_TEST_RUNTIMES_AT_START
	export JSHEETS_ENTRYPOINT_TEST_RUNTIMES
	unset JSHEETS_RUNTIME_TEST_RUNTIMES_AT_START
fi

log() {
	printf 'entrypoint: %s\n' "$*" >&2
}

# Whether the command ("$1") runs sandboxes.
needs_sandboxes() {
	case "${1:-serve}" in
	eval | bench-service | config | access-list | help | -h | --help | -V | --version)
		return 1
		;;
	esac
	return 0
}

# cgroup v1: remount read-only cgroup controller mounts read-write (they are the
# container's own subtrees).
v1_make_writable() {
	while read -r _ _ _ _ mountpoint options rest; do
		case " $rest" in
		*" - cgroup "*) ;;
		*) continue ;;
		esac
		case "$mountpoint" in
		/sys/fs/cgroup/*) ;;
		*) continue ;;
		esac
		case "$options" in
		ro | ro,*) ;;
		*) continue ;;
		esac
		if ! mount -o remount,bind,rw "$mountpoint" 2>/dev/null; then
			log "cannot make $mountpoint writable (needs CAP_SYS_ADMIN and no AppArmor/SELinux mount denial)"
		fi
	done </proc/self/mountinfo
}

# Makes the container's cgroup writable; may re-execute this script in a new cgroup
# namespace (arguments passed on unchanged).
prepare_cgroups() {
	if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
		v1_make_writable
		return 0
	fi
	if [ "$(sed -n 's/^0:://p' /proc/self/cgroup)" != / ]; then
		# In the host's cgroup namespace (`cgroup: host`): a writable mount here would
		# expose the host's whole hierarchy. Make our cgroup the root of a new one.
		if [ -n "${JSHEETS_ENTRYPOINT_CGROUPNS:-}" ]; then
			log "still not at the root of a cgroup namespace after unshare; not touching /sys/fs/cgroup"
			return 0
		fi
		if unshare --cgroup true 2>/dev/null; then
			JSHEETS_ENTRYPOINT_CGROUPNS=1
			export JSHEETS_ENTRYPOINT_CGROUPNS
			exec unshare --cgroup -- "$0" "$@"
		fi
		log "cannot create a cgroup namespace (needs CAP_SYS_ADMIN, seccomp and AppArmor allowing unshare); start the container with a private one (compose: cgroup: private)"
		return 0
	fi
	# After our own unshare the mount still shows the host's hierarchy; otherwise it is
	# Docker's read-only one of our subtree. Either way: replace it by a fresh mount made
	# in our namespace (mounting over it is refused: same filesystem, same place).
	if [ -n "${JSHEETS_ENTRYPOINT_CGROUPNS:-}" ] || [ ! -w /sys/fs/cgroup ]; then
		if ! { umount /sys/fs/cgroup && mount -t cgroup2 -o rw,nosuid,nodev,noexec cgroup2 /sys/fs/cgroup; } 2>/dev/null; then
			log "cannot mount a writable cgroup2 on /sys/fs/cgroup (needs CAP_SYS_ADMIN, seccomp and AppArmor allowing mount)"
			return 0
		fi
	fi
	case " $(sed -n 's/^.* \/sys\/fs\/cgroup .* - cgroup2 [^ ]* \(.*\)$/\1/p' /proc/self/mountinfo | tail -n 1) " in
	*nsdelegate*) ;;
	*) log "warning: cgroup2 is mounted without nsdelegate on this host: root in this container can change the limits set on the container itself" ;;
	esac
}

# The value of `key = "value"` in the effective configuration (`jsheets-runtime config`
# output, held in $config and never printed).
config_value() {
	printf '%s\n' "$config" | sed -n "s/^$1 = \"\\(.*\\)\"\$/\\1/p" | head -n 1
}

test_runtimes() {
	# The effective configuration (file and environment, as `serve` will see it).
	config=$("$BIN" config 2>/dev/null) || {
		log "the configuration is not valid; run \`$BIN config\` for the reason"
		exit 64
	}
	runtimes_dir=$(config_value runtimesDir)
	state_dir=$(config_value stateDir)
	found=0
	for file in "$runtimes_dir"/*/runtime.yml; do
		[ -e "$file" ] || continue
		name=$(basename "$(dirname "$file")")
		found=1
		log "testing runtime $name"
		if ! "$BIN" --runtimes-dir "$runtimes_dir" --state-dir "$state_dir" runtime test "$name" >&2; then
			log "runtime $name failed its test; not starting"
			exit 70
		fi
	done
	if [ "$found" -eq 0 ]; then
		log "no runtime installed in $runtimes_dir"
	fi
}

if [ "$#" -eq 0 ]; then
	set -- serve
fi

if needs_sandboxes "$1"; then
	prepare_cgroups "$@"
	if [ "${JSHEETS_ENTRYPOINT_TEST_RUNTIMES:-0}" = 1 ]; then
		test_runtimes
	fi
fi

# The entrypoint's own state, not the command's.
unset JSHEETS_ENTRYPOINT_TEST_RUNTIMES JSHEETS_ENTRYPOINT_CGROUPNS
exec "$BIN" "$@"
