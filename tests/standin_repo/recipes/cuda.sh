# Recipe for build-repo.sh: NVIDIA's CUDA repository (debian12/x86_64), the driver and toolkit
# packages the nvidia_driver and cuda_toolkit roles install. No payload but marker files, the
# systemd units the roles enable, and the toolkit's nvcc and directories; 535.230.02-1 sits
# beside 535.216.01-1, as newer builds do in the real repository, so the driver pin has work to do.
# shellcheck shell=sh

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

# toolkit MAJOR MINOR META_VERSION COMPONENT_VERSION: cuda-toolkit-X-Y, a metapackage, depends on
# the component packages that own the files, as in NVIDIA's repository: nvcc in cuda-nvcc-X-Y,
# the runtime's lib64 in cuda-cudart-X-Y, all under /usr/local/cuda-X.Y.
toolkit() {
    name="$1-$2"
    home="usr/local/cuda-$1.$2"
    dir=$(payload "cuda-nvcc-$name" "$4-1")
    mkdir -p "$dir/$home/bin"
    cat >"$dir/$home/bin/nvcc" <<NVCC
#!/bin/sh
# Stand-in for nvcc from cuda-nvcc-$name $4-1: answers --version as the real one does.
case "\${1:-}" in
    --version|-V)
        echo "nvcc: NVIDIA (R) Cuda compiler driver"
        echo "Copyright (c) 2005-2023 NVIDIA Corporation"
        echo "Cuda compilation tools, release $1.$2, V$4"
        ;;
    *) echo "nvcc (stand-in): only --version is implemented" >&2; exit 1 ;;
esac
NVCC
    chmod 0755 "$dir/$home/bin/nvcc"
    standin "cuda-nvcc-$name" "$4-1" ""
    dir=$(payload "cuda-cudart-$name" "$4-1")
    mkdir -p "$dir/$home/lib64"
    standin "cuda-cudart-$name" "$4-1" ""
    standin "cuda-toolkit-$name" "$3" "cuda-nvcc-$name (>= $4), cuda-cudart-$name (>= $4)"
}
# CUDA 12.2 is the toolkit of the 535 branch, in two updates; 12.4 is there too, as in the real
# repository.
toolkit 12 2 12.2.0-1 12.2.128
toolkit 12 2 12.2.2-1 12.2.140
toolkit 12 4 12.4.1-1 12.4.131
