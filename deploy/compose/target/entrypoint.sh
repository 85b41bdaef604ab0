#!/bin/sh
# Waits for postern's target CA public key (postern writes it into its data
# directory on first start), publishes this host's key as a known_hosts line
# for postern, then runs sshd in the foreground.
set -eu
if [ ! -f /keys/ssh_host_ed25519_key ]; then
  ssh-keygen -q -t ed25519 -N '' -f /keys/ssh_host_ed25519_key
fi
printf 'target %s\n' "$(cut -d' ' -f1,2 /keys/ssh_host_ed25519_key.pub)" > /keys/known_hosts
chmod 0644 /keys/known_hosts /keys/ssh_host_ed25519_key.pub
i=0
until [ -s /postern/ca/target_ca.pub ]; do
  i=$((i + 1))
  if [ "$i" -gt 120 ]; then
    echo "target CA public key not found in postern's data volume" >&2
    exit 1
  fi
  sleep 1
done
cp /postern/ca/target_ca.pub /etc/ssh/postern_target_ca.pub
exec /usr/sbin/sshd -D -e
