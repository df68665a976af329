#!/bin/sh
# Builds a signed stand-in for one of NVIDIA's flat apt repositories (suite "/"), for Molecule
# scenarios that install packages under NVIDIA's names through the roles' real tasks:
#   build-repo.sh ROOT RECIPE [SUBDIR]
# RECIPE is a shell file sourced here; it calls `payload NAME VERSION` (a package's file tree, to
# put files in) and `standin NAME VERSION DEPENDS [UNIT]` (build it; UNIT names a systemd service
# it ships). The result:
#   ROOT/signed/SUBDIR/     pool/, Packages, Release, InRelease, Release.gpg signed by a throwaway key
#   ROOT/signed/            key.asc and key.fpr (that key), other-key.asc and other-key.fpr (a key
#                           that signed nothing), two-keys.asc (both keys in one file)
#   ROOT/unsigned/SUBDIR/   the same packages with no signature at all
set -eu

[ $# -ge 2 ] || { echo "usage: build-repo.sh ROOT RECIPE [SUBDIR]" >&2; exit 2; }
root=$1
recipe=$2
subdir=${3:-.}
repo=$root/signed/$subdir
work=/var/tmp/standins
arch=$(dpkg --print-architecture)
export GNUPGHOME=/root/standin-gnupg

rm -rf "$root" "$work" "$GNUPGHOME"
mkdir -p "$repo/pool" "$root/unsigned/$subdir" "$work"
mkdir -m 0700 "$GNUPGHOME"

# payload NAME VERSION: the file tree of that package (created with its marker file), printed.
payload() {
    dir="$work/$1_$2"
    if [ ! -d "$dir/DEBIAN" ]; then
        mkdir -p "$dir/DEBIAN" "$dir/usr/share/fleetctl-standin"
        printf '%s %s: stand-in for the package of that name in an NVIDIA repository\n' "$1" "$2" \
            >"$dir/usr/share/fleetctl-standin/$1"
    fi
    echo "$dir"
}

# standin NAME VERSION DEPENDS [UNIT]: builds the package from its payload into the pool.
standin() {
    dir=$(payload "$1" "$2")
    {
        echo "Package: $1"
        echo "Version: $2"
        echo "Architecture: $arch"
        echo "Maintainer: fleetctl tests <tests@fleetctl.invalid>"
        [ -n "$3" ] && echo "Depends: $3"
        echo "Description: stand-in for NVIDIA's $1 (test repository)"
    } >"$dir/DEBIAN/control"
    if [ -n "${4:-}" ]; then
        mkdir -p "$dir/lib/systemd/system"
        printf '[Unit]\nDescription=%s (stand-in)\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n' \
            "$4" >"$dir/lib/systemd/system/$4.service"
    fi
    # The file name leaves out the epoch, as Debian archives do.
    dpkg-deb --root-owner-group --build "$dir" "$repo/pool/$1_${2#*:}_$arch.deb" >/dev/null
}

# shellcheck source=/dev/null
. "$recipe"

# index DIR: Packages and Release of a flat repository (Release written beside, then moved in,
# so it does not list itself).
index() {
    (cd "$1" && apt-ftparchive packages . >Packages && gzip -9kf Packages \
        && apt-ftparchive -o APT::FTPArchive::Release::Origin=fleetctl-standin \
            -o APT::FTPArchive::Release::Label=fleetctl-standin release . >../Release.tmp \
        && mv ../Release.tmp Release)
}
cp -al "$repo/pool" "$root/unsigned/$subdir/pool"
index "$repo"
index "$root/unsigned/$subdir"

gpg --batch --quiet --passphrase '' --quick-gen-key 'fleetctl stand-in repository <repo@fleetctl.invalid>' ed25519 sign never
gpg --batch --quiet --passphrase '' --quick-gen-key 'fleetctl other key <other@fleetctl.invalid>' ed25519 sign never
fpr() { gpg --with-colons --list-keys "$1" | awk -F: '/^fpr:/ { print $10; exit }'; }
good=$(fpr repo@fleetctl.invalid)
other=$(fpr other@fleetctl.invalid)

gpg --batch --yes --local-user "$good" --clearsign --output "$repo/InRelease" "$repo/Release"
gpg --batch --yes --local-user "$good" --armor --detach-sign --output "$repo/Release.gpg" "$repo/Release"
gpg --armor --export "$good" >"$root/signed/key.asc"
gpg --armor --export "$other" >"$root/signed/other-key.asc"
# The right key with another one after it: Signed-By would trust both.
cat "$root/signed/key.asc" "$root/signed/other-key.asc" >"$root/signed/two-keys.asc"
echo "$good" >"$root/signed/key.fpr"
echo "$other" >"$root/signed/other-key.fpr"
rm -rf "$work"
echo "repository built in $repo: $(ls "$repo/pool" | wc -l) packages, signing key $good"
