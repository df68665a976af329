#!/usr/bin/env bash
# Runs `molecule test` for every scenario of every role (roles/<role>/molecule/<scenario>), then
# the fleet-level scenario (tests/molecule/fleet). Runs them all, prints each one's duration, and
# fails at the end listing the scenarios that failed. ROLES="base fleet_agent" limits the roles
# run; FLEET=0 skips the fleet scenario.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 2

die() { echo "molecule-all: $*" >&2; exit 2; }

command -v molecule >/dev/null || die "molecule is not on PATH (run through 'make molecule')"
command -v docker >/dev/null || die "docker is not installed (apt-get install -y docker.io)"
docker info >/dev/null 2>&1 || die "docker daemon is not reachable (is dockerd running?)"
# Builds the image when missing or when its Dockerfile changed; a no-op otherwise.
bash tests/images/build.sh || die "building the test image failed"

# Each entry is "<project dir>:<scenario>"; molecule runs from the project dir.
scenarios=()
add_role() {
    local role=$1 found=0 file dir
    for file in roles/"$role"/molecule/*/molecule.yml; do
        [[ -f $file ]] || continue
        dir=${file%/molecule.yml}
        scenarios+=("roles/$role:${dir##*/}")
        found=1
    done
    [[ $found == 1 ]] || die "roles/$role has no Molecule scenario"
}
if [[ -n ${ROLES:-} ]]; then
    for role in $ROLES; do add_role "$role"; done
else
    for dir in roles/*/; do
        role=${dir%/}; role=${role#roles/}
        [[ -d roles/$role/molecule ]] && add_role "$role"
    done
fi
[[ ${FLEET:-1} == 1 ]] && scenarios+=("tests:fleet")

failed=()
summary=()
for entry in "${scenarios[@]}"; do
    # The fleet scenario lives outside a role: Molecule finds it under molecule/fleet of the
    # tests/ project directory.
    project="${entry%%:*}/molecule/${entry##*:}"
    echo "==> molecule test: $project"
    start=$SECONDS
    (cd "${entry%%:*}" && molecule test -s "${entry##*:}")
    rc=$?
    took=$((SECONDS - start))
    if [[ $rc == 0 ]]; then
        summary+=("ok      ${took}s  $project")
    else
        summary+=("FAILED  ${took}s  $project (exit $rc)")
        failed+=("$project")
    fi
done

echo "==> molecule summary"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "molecule-all: ${#failed[@]} scenario(s) failed: ${failed[*]}" >&2
    exit 1
fi
