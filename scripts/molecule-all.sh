#!/usr/bin/env bash
# Runs `molecule test` for every role with a molecule/default scenario, then the fleet-level
# scenario (tests/molecule/fleet). Runs them all, prints each one's duration, and fails at the
# end listing the scenarios that failed. ROLES="base fleet_agent" limits the roles run;
# FLEET=0 skips the fleet scenario.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 2

die() { echo "molecule-all: $*" >&2; exit 2; }

command -v molecule >/dev/null || die "molecule is not on PATH (run through 'make molecule')"
command -v docker >/dev/null || die "docker is not installed (apt-get install -y docker.io)"
docker info >/dev/null 2>&1 || die "docker daemon is not reachable (is dockerd running?)"
# Builds the image when missing or when its Dockerfile changed; a no-op otherwise.
bash tests/images/build.sh || die "building the test image failed"

scenarios=()
if [[ -n ${ROLES:-} ]]; then
    for role in $ROLES; do
        [[ -d roles/$role/molecule/default ]] || die "roles/$role has no molecule/default scenario"
        scenarios+=("roles/$role")
    done
else
    for dir in roles/*/molecule/default; do
        [[ -d $dir ]] && scenarios+=("${dir%/molecule/default}")
    done
fi
[[ ${FLEET:-1} == 1 ]] && scenarios+=("tests/molecule/fleet")

failed=()
summary=()
for project in "${scenarios[@]}"; do
    echo "==> molecule test: $project"
    start=$SECONDS
    if [[ $project == tests/molecule/fleet ]]; then
        # The fleet scenario lives outside a role: Molecule finds it under molecule/fleet of
        # the tests/ project directory.
        (cd tests && molecule test -s fleet)
    else
        (cd "$project" && molecule test)
    fi
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
