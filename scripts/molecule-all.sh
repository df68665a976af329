#!/usr/bin/env bash
# Runs `molecule test` for every scenario of every role (roles/<role>/molecule/<scenario>) and
# the fleet-level scenario (tests/molecule/fleet). Runs them all, MOLECULE_JOBS at a time (default 2:
# a scenario spends much of its time waiting on containers, and every scenario has its own container
# names and ports on the shared host network, so two can run side by side), prints each one's output
# whole when it ends and its duration, and fails at the end listing the scenarios that failed.
# ROLES="base fleet_agent" limits the roles run; FLEET=0 skips the fleet scenario.
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

# `wait -n -p` (which job ended) is bash 5.1's.
(( BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1) )) \
    || die "bash 5.1 or newer is required (this is $BASH_VERSION)"
parallel=${MOLECULE_JOBS:-2}
[[ $parallel =~ ^[1-9][0-9]*$ ]] || die "MOLECULE_JOBS must be a positive whole number, got '$parallel'"
# The longest scenarios start first, so that the last to end is a short one.
slow_first=(roles/fleet_agent:default roles/nvidia_driver:cuda_repo tests:fleet)
ordered=()
for entry in "${slow_first[@]}"; do
    [[ " ${scenarios[*]} " == *" $entry "* ]] && ordered+=("$entry")
done
for entry in "${scenarios[@]}"; do
    [[ " ${slow_first[*]} " == *" $entry "* ]] || ordered+=("$entry")
done

logs=$(mktemp -d "${TMPDIR:-/tmp}/molecule-all.XXXXXX") || die "cannot create a log directory"
declare -A project_of=() started_at=() log_of=()
# Each scenario runs in a session of its own (setsid), so that stopping one stops Molecule and the
# ansible-playbook processes under it; interrupted, every running scenario is stopped that way.
stop_all() {
    local pid
    for pid in "${!project_of[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; done
    echo "molecule-all: interrupted; logs in $logs" >&2
    exit 130
}
trap stop_all INT TERM HUP

failed=()
summary=()
finish() {  # $1: a finished job's pid, $2: its exit status
    local pid=$1 rc=$2 project took
    project=${project_of[$pid]}
    took=$((SECONDS - started_at[$pid]))
    echo "==> molecule test: $project (exit $rc, ${took}s)"
    cat "${log_of[$pid]}"
    if [[ $rc == 0 ]]; then
        summary+=("ok      ${took}s  $project")
    else
        summary+=("FAILED  ${took}s  $project (exit $rc)")
        failed+=("$project")
    fi
    unset "project_of[$pid]"
}

running=0
reap() {  # waits for the next scenario to end and reports it
    local done_pid rc
    wait -n -p done_pid; rc=$?
    finish "$done_pid" "$rc"; running=$((running - 1))
}
for entry in "${ordered[@]}"; do
    (( running >= parallel )) && reap
    # The fleet scenario lives outside a role: Molecule finds it under molecule/fleet of the
    # tests/ project directory.
    project="${entry%%:*}/molecule/${entry##*:}"
    log="$logs/${project//\//_}.log"
    echo "==> molecule test: $project started (output in $log, shown when it ends)"
    # Its own ANSIBLE_HOME: Molecule's prerun installs this repository's collection there with
    # --force, which two scenarios starting together must not do into one directory.
    (cd "${entry%%:*}" && ANSIBLE_HOME="${log%.log}.ansible" exec setsid --wait molecule test -s "${entry##*:}") \
        > "$log" 2>&1 &
    pid=$!
    project_of[$pid]=$project
    log_of[$pid]=$log
    started_at[$pid]=$SECONDS
    running=$((running + 1))
done
while (( running > 0 )); do reap; done
rm -rf "$logs"

echo "==> molecule summary"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "molecule-all: ${#failed[@]} scenario(s) failed: ${failed[*]}" >&2
    exit 1
fi
