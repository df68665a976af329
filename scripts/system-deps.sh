#!/usr/bin/env bash
# Make sure the system services the tests use are present: Docker (a running dockerd), Slurm and
# munge, Prometheus/promtool, debootstrap. As root on Debian/Ubuntu, missing ones are installed
# with apt; otherwise one line says what is missing and the target stops (it never skips tests).
set -euo pipefail

PACKAGES=(docker.io debootstrap slurm-wlm slurm-client munge prometheus openssh-client rsync)
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v scontrol >/dev/null || need+=(slurm-client)
command -v munged >/dev/null || need+=(munge)
command -v promtool >/dev/null || need+=(prometheus)
command -v ssh-keyscan >/dev/null || need+=(openssh-client)

if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "system-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" </dev/null >/dev/null
  else
    echo "system-deps: missing ${need[*]} (install them with apt as root, or run 'make test' as root)" >&2
    exit 1
  fi
fi

# The Prometheus package starts a server on :9090 when installed; the tests run their own.
if [[ $(id -u) -eq 0 ]] && pgrep -x prometheus >/dev/null && command -v systemctl >/dev/null; then
  systemctl stop prometheus 2>/dev/null || true
fi

if ! docker info >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "system-deps: starting dockerd"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "system-deps: dockerd did not start (see /var/log/dockerd.log)" >&2; exit 1; }
  else
    echo "system-deps: Docker is not reachable (start dockerd, or run as root)" >&2
    exit 1
  fi
fi
