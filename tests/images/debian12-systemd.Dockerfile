# Debian 12 with systemd as PID 1, for Molecule and the SSH lab (see tests/molecule/README.md
# for the container settings it needs: no --privileged here).
ARG BASE=fleetctl/debian12-rootfs:latest
FROM ${BASE}

ENV container=docker \
    DEBIAN_FRONTEND=noninteractive

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-apt python3-venv sudo systemd systemd-sysv openssh-server dbus \
        ca-certificates iproute2 procps curl \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    # An old mtime: apt's cache_valid_time must see no fresh cache and update it.
    && touch -d @0 /var/lib/apt/lists \
    # Units that make no sense (or hang) in a container.
    && systemctl mask getty.target console-getty.service systemd-logind.service \
        systemd-remount-fs.service dev-hugepages.mount sys-fs-fuse-connections.mount \
    # sshd is enabled per host by whoever needs it (the lab), with its own port.
    && systemctl disable ssh.service \
    && rm -f /etc/ssh/ssh_host_*_key* \
    && systemctl set-default multi-user.target

STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
