#!/usr/bin/env bash
# Make sure the system services the tests use are present: Docker (a running dockerd), Slurm and
# munge, Prometheus/promtool, PostgreSQL (shared state tests), VictoriaMetrics (the Prometheus-compatible
# engine test), debootstrap (for the test images, tests/images/build.sh). As root on
# Debian/Ubuntu, missing ones are installed with apt and dockerd is started; otherwise ONE line
# says everything that is missing and the target stops (it never skips tests).
set -euo pipefail

PACKAGES=(docker.io debootstrap slurm-wlm slurm-client munge prometheus postgresql victoria-metrics openssh-client rsync)
ROOTFS_IMAGE="${ROOTFS_IMAGE:-fleetctl/debian12-rootfs:latest}"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v scontrol >/dev/null || need+=(slurm-client)
command -v munged >/dev/null || need+=(munge)
command -v promtool >/dev/null || need+=(prometheus)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v victoria-metrics >/dev/null || need+=(victoria-metrics)
command -v ssh-keyscan >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)

docker_up() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

if [[ $(id -u) -ne 0 ]]; then
    # Everything at once: a user fixing one thing at a time would run make four times.
    missing=()
    ((${#need[@]})) && missing+=("apt packages ${need[*]}")
    if ! docker_up; then
        missing+=("a running dockerd this user can reach (docker group)")
    elif ! docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1; then
        # debootstrap needs root; the systemd image on top of it builds as any docker user.
        missing+=("the image $ROOTFS_IMAGE (tests/images/build.sh as root)")
    fi
    if ((${#missing[@]})); then
        joined="$(printf '%s; ' "${missing[@]}")"
        echo "system-deps: as non-root, 'make test' needs: ${joined%; } — or run it as root once, which installs them" >&2
        exit 1
    fi
    exit 0
fi

if ((${#need[@]})); then
    if ! command -v apt-get >/dev/null; then
        echo "system-deps: missing ${need[*]} and no apt-get to install them (Debian/Ubuntu packages)" >&2
        exit 1
    fi
    echo "system-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" </dev/null >/dev/null
fi

# The Prometheus package starts a server on :9090 when installed; the tests run their own.
# (PostgreSQL and VictoriaMetrics servers the packages start are left alone: the tests start their
# own on other ports.)
if pgrep -x prometheus >/dev/null && command -v systemctl >/dev/null; then
    systemctl stop prometheus 2>/dev/null || true
fi

if ! docker_up; then
    echo "system-deps: starting dockerd"
    # Only stdin/stdout/stderr go with it: a long-lived daemon that inherits its caller's other
    # descriptors holds them for ever (a `flock LOCK make test` would never release LOCK).
    (
        for fd in /proc/$BASHPID/fd/*; do
            n=${fd##*/}
            if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
        done
        exec nohup dockerd </dev/null >/var/log/dockerd.log 2>&1
    ) &
    for _ in $(seq 60); do docker_up && break; sleep 1; done
    docker_up || { echo "system-deps: dockerd did not start (see /var/log/dockerd.log)" >&2; exit 1; }
fi
