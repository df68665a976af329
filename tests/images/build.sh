#!/usr/bin/env bash
# Builds the Debian 12 images Molecule and the SSH lab use, with no image registry:
#   fleetctl/debian12-rootfs:latest   debootstrap --variant=minbase bookworm, docker import
#   fleetctl/debian12-systemd:latest  + systemd (PID 1), python3, sudo, sshd, ... (Dockerfile here)
# Idempotent: an image that exists is kept; FORCE=1 rebuilds both.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rootfs_image="${ROOTFS_IMAGE:-fleetctl/debian12-rootfs:latest}"
systemd_image="${SYSTEMD_IMAGE:-fleetctl/debian12-systemd:latest}"
force="${FORCE:-0}"
start=$SECONDS

die() { echo "build.sh: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed (apt-get install -y docker.io)"
docker info >/dev/null 2>&1 || die "docker daemon is not reachable (is dockerd running?)"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The first deb URI of the host's deb822 sources (a local mirror or snapshot when one is set).
debian_mirror() {
    local src=/etc/apt/sources.list.d/debian.sources uri=""
    if [[ -r $src ]]; then
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$src")"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

if [[ $force == 1 ]] || ! image_exists "$rootfs_image"; then
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"
    mirror="$(debian_mirror)"
    workdir="$(mktemp -d /tmp/fleetctl-rootfs.XXXXXX)"
    trap 'rm -rf "$workdir"' EXIT
    echo "build.sh: debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$workdir/rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 \
        || { tail -n 30 "$workdir/debootstrap.log" >&2; die "debootstrap failed"; }
    # The image's apt points at the same mirror as the host.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" \
        >"$workdir/rootfs/etc/apt/sources.list"
    rm -rf "$workdir/rootfs/var/cache/apt/archives/"*.deb "$workdir/rootfs/var/lib/apt/lists/"*
    tar -C "$workdir/rootfs" -c . | docker import - "$rootfs_image" >/dev/null
    echo "build.sh: imported $rootfs_image"
    rm -rf "$workdir"
    trap - EXIT
else
    echo "build.sh: $rootfs_image exists (FORCE=1 rebuilds)"
fi

# The Dockerfile's hash rides on the image as a label: editing the Dockerfile rebuilds it.
dockerfile="$here/debian12-systemd.Dockerfile"
want_hash="$(sha256sum "$dockerfile" | cut -d' ' -f1)"
have_hash="$(docker image inspect -f '{{ index .Config.Labels "fleetctl.dockerfile.sha256" }}' \
    "$systemd_image" 2>/dev/null || true)"
if [[ $force == 1 || $have_hash != "$want_hash" ]]; then
    docker build --quiet --build-arg "BASE=$rootfs_image" --label "fleetctl.dockerfile.sha256=$want_hash" \
        -t "$systemd_image" -f "$dockerfile" "$here" >/dev/null
    echo "build.sh: built $systemd_image"
else
    echo "build.sh: $systemd_image is up to date (FORCE=1 rebuilds)"
fi

echo "build.sh: done in $((SECONDS - start)) s"
