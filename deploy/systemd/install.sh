#!/bin/sh
# Installs postern as a systemd service (run as root from the repository,
# after make build):
#
#   deploy/systemd/install.sh [CONFIG]
#
# CONFIG defaults to deploy/systemd/config.yaml and is installed only if
# /etc/postern/config.yaml does not exist. CA keys are generated only if
# missing. With DESTDIR set, everything goes below it and nothing is started
# (packaging, and the test that checks this script: deploy/systemd_test.go).
set -eu
cd "$(dirname "$0")/../.."
DESTDIR=${DESTDIR:-}
BIN=${POSTERN_BIN:-bin/postern}
CONFIG=${1:-deploy/systemd/config.yaml}

# The binary and the unit.
install -D -m 0755 "$BIN" "$DESTDIR/usr/local/bin/postern"
install -D -m 0644 deploy/systemd/postern.service "$DESTDIR/etc/systemd/system/postern.service"

# The configuration: no secret in it, readable by the service's dynamic user.
install -d -m 0755 "$DESTDIR/etc/postern"
if [ ! -e "$DESTDIR/etc/postern/config.yaml" ]; then
	install -m 0644 "$CONFIG" "$DESTDIR/etc/postern/config.yaml"
fi

# The secrets: root only; systemd hands the service private copies
# (LoadCredential=). The three CA keys are generated once.
install -d -m 0700 "$DESTDIR/etc/postern/credentials"
for ca in user_ca host_ca target_ca; do
	if [ ! -e "$DESTDIR/etc/postern/credentials/$ca" ]; then
		ssh-keygen -q -t ed25519 -N '' -C "postern $ca" -f "$DESTDIR/etc/postern/credentials/$ca"
		chmod 0600 "$DESTDIR/etc/postern/credentials/$ca"
	fi
done

if [ -n "$DESTDIR" ]; then
	exit 0
fi
# The same check the unit runs before it starts, with the credentials where
# the unit's LoadCredential= lines read them.
CREDENTIALS_DIRECTORY=/etc/postern/credentials /usr/local/bin/postern check --config /etc/postern/config.yaml --data-dir /var/lib/postern
systemctl daemon-reload
systemctl enable --now postern
echo "postern is running: systemctl status postern; targets trust: postern ca export --target --config /etc/postern/config.yaml"
