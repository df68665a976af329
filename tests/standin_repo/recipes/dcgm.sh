# Recipe for build-repo.sh: DCGM in NVIDIA's CUDA repository (debian12/x86_64), both namings the
# dcgm role installs: DCGM 3's single datacenter-gpu-manager (versions "1:3.3.x", an epoch and no
# revision) and DCGM 4's datacenter-gpu-manager-4-core with one package per CUDA major
# (-4-cuda12, -4-cuda13; versions "1:4.x.y-1"). A newer build sits beside each pinned one, so the
# pin has work to do. The packages that carry the binaries ship stand-ins for dcgmi and
# nv-hostengine (tests/standin_repo/dcgm/, passed to serve.yml as standin_repo_files), the
# nvidia-dcgm unit, and a real `dcgmi diag -r 1 -j` document from tests/fixtures/dcgm/ with the
# exit status dcgmi gave with it.
# shellcheck shell=sh

files="$(dirname "$recipe")/files"

# dcgm_binaries NAME VERSION FIXTURE RC: the binaries, unit and diagnostic answer of one package.
dcgm_binaries() {
    dir=$(payload "$1" "$2")
    upstream=${2#*:}
    upstream=${upstream%-*}
    mkdir -p "$dir/usr/bin" "$dir/lib/systemd/system" "$dir/usr/share/fleetctl-standin/dcgm"
    for tool in dcgmi nv-hostengine; do
        sed "s/@VERSION@/$upstream/" "$files/$tool" >"$dir/usr/bin/$tool"
        chmod 0755 "$dir/usr/bin/$tool"
    done
    cp "$files/$3" "$dir/usr/share/fleetctl-standin/dcgm/diag-r1.json"
    cp "$files/dcgmi_connection_error.txt" "$dir/usr/share/fleetctl-standin/dcgm/connection-error.txt"
    echo "$4" >"$dir/usr/share/fleetctl-standin/dcgm/diag-r1.rc"
    # NVIDIA's unit runs the host engine in the foreground under systemd (nv-hostengine -n).
    printf '[Unit]\nDescription=NVIDIA DCGM service (stand-in)\n\n[Service]\nExecStart=/usr/bin/nv-hostengine -n\nRestart=on-abort\n\n[Install]\nWantedBy=multi-user.target\n' \
        >"$dir/lib/systemd/system/nvidia-dcgm.service"
}

# DCGM 3: the 3.x diagnostic layout (DCGM 3.1.0's output, 8 GPUs, all passed: exit 0).
for v in 1:3.3.6 1:3.3.9; do
    dcgm_binaries datacenter-gpu-manager "$v" dcgm3.1_level1_8gpu_pass.json 0
    standin datacenter-gpu-manager "$v" "python3"
done

# DCGM 4: the 4.x layout (DCGM 4.2.3 on a GB10 whose persistence mode is off: a failed
# deployment check, exit 226).
for v in 1:4.2.3-1 1:4.5.2-1; do
    dcgm_binaries datacenter-gpu-manager-4-core "$v" dcgm4.2.3_gb10_level1_fail.json 226
    standin datacenter-gpu-manager-4-core "$v" "python3"
    standin datacenter-gpu-manager-4-cuda12 "$v" "datacenter-gpu-manager-4-core (= $v)"
    standin datacenter-gpu-manager-4-cuda13 "$v" "datacenter-gpu-manager-4-core (= $v)"
done
