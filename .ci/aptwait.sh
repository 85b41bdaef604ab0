# shellcheck shell=bash
# Waiting for another package manager: sourced by .ci/run (and its test,
# deploy/ci_test.go). apt and dpkg hold their lock files open while they
# run; a second apt-get fails at once ("Could not get lock"). wait_for_apt
# waits, for up to APT_WAIT_SECONDS (default 900), until no process holds
# any of APT_LOCK_FILES open. It reads /proc, so it needs nothing that is
# not installed yet. apt-get itself is then run with DPkg::Lock::Timeout, so
# a package manager starting in between is waited for too.

APT_LOCK_FILES=${APT_LOCK_FILES:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock}
APT_WAIT_SECONDS=${APT_WAIT_SECONDS:-900}

# apt_lock_holder prints the pid of one process holding a lock file open,
# or nothing.
apt_lock_holder() {
	local fd target lock
	for fd in /proc/[0-9]*/fd/*; do
		target=$(readlink "$fd" 2>/dev/null) || continue
		for lock in $APT_LOCK_FILES; do
			if [ "$target" = "$lock" ]; then
				fd=${fd#/proc/}
				echo "${fd%%/*}"
				return 0
			fi
		done
	done
}

# wait_for_apt returns once no process holds an apt or dpkg lock, or fails
# after APT_WAIT_SECONDS.
wait_for_apt() {
	local start pid said=""
	start=$(date +%s)
	while pid=$(apt_lock_holder) && [ -n "$pid" ]; do
		if [ -z "$said" ]; then
			echo "waiting for another package manager to finish (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null))"
			said=1
		fi
		if [ $(($(date +%s) - start)) -ge "$APT_WAIT_SECONDS" ]; then
			echo "another package manager (pid $pid) still holds the apt lock after ${APT_WAIT_SECONDS}s" >&2
			return 1
		fi
		sleep 2
	done
	if [ -n "$said" ]; then
		echo "the other package manager finished"
	fi
}

# apt_get runs apt-get once the locks are free, itself waiting for a lock
# taken in between.
apt_get() {
	wait_for_apt || return 1
	apt-get -o DPkg::Lock::Timeout="$APT_WAIT_SECONDS" "$@"
}
