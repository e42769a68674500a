#!/usr/bin/env bash
# Make sure a Docker daemon answers on /var/run/docker.sock (install and start
# one if needed) and that busybox-static is available for the test image.
# Idempotent and harmless when a daemon already runs. When a daemon cannot be
# started here (not root, no apt, no kernel support) it prints why and exits 0:
# the docker tests then skip locally with that reason, and fail under CI=true.
set -uo pipefail
SOCK=/var/run/docker.sock
ready() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if ready && [ -x /bin/busybox ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure-docker: not root; cannot install or start dockerd (docker tests will skip)"
  exit 0
fi
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-docker: installing ${need[*]}…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
    || echo "ensure-docker: apt-get install ${need[*]} failed"
fi
if ready; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: dockerd is not installed and could not be installed (docker tests will skip)"
  exit 0
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd (log: /tmp/dockerd.log)"
  nohup dockerd --storage-driver=overlay2 --iptables=false --bridge=none \
    >/tmp/dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 1 60); do
  if [ -S "$SOCK" ] && ready; then exit 0; fi
  sleep 0.5
done
echo "ensure-docker: dockerd did not become ready; see /tmp/dockerd.log (docker tests will skip)"
exit 0
