#!/bin/sh
# Builds a stand-in for NVIDIA's CUDA apt repository (debian12/x86_64 is a flat repository,
# suite "/") under /srv/mirror, for the cuda_repo Molecule scenario:
#   signed/    Packages, Release, InRelease, Release.gpg signed by a throwaway key; key.asc and
#              key.fpr (that key), other-key.asc and other-key.fpr (a key that signed nothing),
#              two-keys.asc (both keys in one file)
#   unsigned/  the same packages with no signature at all
# The packages carry the names and versions of NVIDIA's repository and no payload but a marker
# file (and the systemd units the roles enable). 535.230.02-1 sits beside the pinned
# 535.216.01-1, as newer builds do in the real repository, so the role's pin has work to do.
set -eu

root=/srv/mirror
work=/var/tmp/standins
arch=$(dpkg --print-architecture)
export GNUPGHOME=/root/mirror-gnupg

rm -rf "$root" "$work" "$GNUPGHOME"
mkdir -p "$root/signed/pool" "$root/unsigned" "$work"
mkdir -m 0700 "$GNUPGHOME"

# standin NAME VERSION DEPENDS [UNIT]: one package; UNIT names a systemd service it ships.
standin() {
    dir="$work/$1_$2"
    mkdir -p "$dir/DEBIAN" "$dir/usr/share/fleetctl-standin"
    printf '%s %s: stand-in for the package of that name in NVIDIA'"'"'s CUDA repository\n' "$1" "$2" \
        >"$dir/usr/share/fleetctl-standin/$1"
    {
        echo "Package: $1"
        echo "Version: $2"
        echo "Architecture: $arch"
        echo "Maintainer: fleetctl tests <tests@fleetctl.invalid>"
        [ -n "$3" ] && echo "Depends: $3"
        echo "Description: stand-in for NVIDIA's $1 (test mirror, no payload)"
    } >"$dir/DEBIAN/control"
    if [ -n "${4:-}" ]; then
        mkdir -p "$dir/lib/systemd/system"
        printf '[Unit]\nDescription=%s (stand-in)\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n' \
            "$4" >"$dir/lib/systemd/system/$4.service"
    fi
    dpkg-deb --root-owner-group --build "$dir" "$root/signed/pool/$1_$2_$arch.deb" >/dev/null
}

for v in 535.216.01-1 535.230.02-1; do
    standin nvidia-kernel-dkms "$v" ""
    standin nvidia-kernel-open-dkms "$v" ""
    standin libnvidia-ml1 "$v" ""
    standin nvidia-smi "$v" "libnvidia-ml1 (= $v)"
    standin nvidia-persistenced "$v" "" nvidia-persistenced
    standin nvidia-driver "$v" "nvidia-kernel-dkms (= $v) | nvidia-kernel-open-dkms (= $v), nvidia-smi (= $v)"
    standin cuda-drivers-535 "$v" "nvidia-driver (= $v)"
    standin nvidia-fabricmanager-535 "$v" "" nvidia-fabricmanager
    standin libnvidia-nscq-535 "$v" ""
done
# CUDA 12.2 is the toolkit of the 535 branch; 12.4 is there too, as in the real repository.
standin cuda-toolkit-12-2 12.2.2-1 ""
mkdir -p "$work/cuda-toolkit-12-2_12.2.2-1/usr/local/cuda-12.2/bin" "$work/cuda-toolkit-12-2_12.2.2-1/usr/local/cuda-12.2/lib64"
printf '#!/bin/sh\necho "Cuda compilation tools, release 12.2, V12.2.140 (stand-in)"\n' \
    >"$work/cuda-toolkit-12-2_12.2.2-1/usr/local/cuda-12.2/bin/nvcc"
chmod 0755 "$work/cuda-toolkit-12-2_12.2.2-1/usr/local/cuda-12.2/bin/nvcc"
dpkg-deb --root-owner-group --build "$work/cuda-toolkit-12-2_12.2.2-1" \
    "$root/signed/pool/cuda-toolkit-12-2_12.2.2-1_$arch.deb" >/dev/null
standin cuda-toolkit-12-4 12.4.1-1 ""

# index ROOT: Packages and Release of a flat repository (Release written beside, then moved in,
# so it does not list itself).
index() {
    (cd "$1" && apt-ftparchive packages . >Packages && gzip -9kf Packages \
        && apt-ftparchive -o APT::FTPArchive::Release::Origin=fleetctl-test-mirror \
            -o APT::FTPArchive::Release::Label=fleetctl-test-mirror release . >../Release.tmp \
        && mv ../Release.tmp Release)
}
cp -al "$root/signed/pool" "$root/unsigned/pool"
index "$root/signed"
index "$root/unsigned"

gpg --batch --quiet --passphrase '' --quick-gen-key 'fleetctl test mirror <mirror@fleetctl.invalid>' ed25519 sign never
gpg --batch --quiet --passphrase '' --quick-gen-key 'fleetctl other key <other@fleetctl.invalid>' ed25519 sign never
fpr() { gpg --with-colons --list-keys "$1" | awk -F: '/^fpr:/ { print $10; exit }'; }
good=$(fpr mirror@fleetctl.invalid)
other=$(fpr other@fleetctl.invalid)

gpg --batch --yes --local-user "$good" --clearsign --output "$root/signed/InRelease" "$root/signed/Release"
gpg --batch --yes --local-user "$good" --armor --detach-sign --output "$root/signed/Release.gpg" "$root/signed/Release"
gpg --armor --export "$good" >"$root/signed/key.asc"
gpg --armor --export "$other" >"$root/signed/other-key.asc"
# The right key with another one after it: Signed-By would trust both.
cat "$root/signed/key.asc" "$root/signed/other-key.asc" >"$root/signed/two-keys.asc"
echo "$good" >"$root/signed/key.fpr"
echo "$other" >"$root/signed/other-key.fpr"
rm -rf "$work"
echo "mirror built: $(ls "$root/signed/pool" | wc -l) packages, signing key $good"
