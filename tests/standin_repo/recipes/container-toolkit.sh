# Recipe for build-repo.sh: NVIDIA's container toolkit repository (libnvidia-container, deb/amd64).
# The four packages the container_runtime role installs, with their real names, dependencies and
# binaries as small scripts: nvidia-container-runtime hands every call to runc as the real one
# does after adding its hook, so the path the engines are configured with exists and runs.
# 1.18.0-1 sits beside 1.17.8-1 so the role's version pin has work to do.
# shellcheck shell=sh

for v in 1.17.8-1 1.18.0-1; do
    u=${v%-*}
    standin libnvidia-container1 "$v" ""

    dir=$(payload libnvidia-container-tools "$v")
    mkdir -p "$dir/usr/bin"
    printf '#!/bin/sh\n# Stand-in for nvidia-container-cli %s.\n[ "${1:-}" = --version ] || { echo "nvidia-container-cli (stand-in): only --version" >&2; exit 1; }\nprintf "cli-version: %s\\nlib-version: %s\\n"\n' \
        "$u" "$u" "$u" >"$dir/usr/bin/nvidia-container-cli"
    chmod 0755 "$dir/usr/bin/nvidia-container-cli"
    standin libnvidia-container-tools "$v" "libnvidia-container1 (>= $v)"

    dir=$(payload nvidia-container-toolkit-base "$v")
    mkdir -p "$dir/usr/bin" "$dir/etc/nvidia-container-runtime"
    cat >"$dir/usr/bin/nvidia-container-runtime" <<RUNTIME
#!/bin/sh
# Stand-in for nvidia-container-runtime $u: the real one adds NVIDIA's hook to the container's
# OCI spec, then runs runc with the same arguments.
case "\${1:-}" in
    --version|-v) echo "NVIDIA Container Runtime version $u"; exec runc --version ;;
esac
exec runc "\$@"
RUNTIME
    cat >"$dir/usr/bin/nvidia-ctk" <<CTK
#!/bin/sh
# Stand-in for nvidia-ctk $u. CDI generation needs NVML, which no container here has.
case "\${1:-}" in
    --version|-v) echo "NVIDIA Container Toolkit CLI version $u" ;;
    cdi) echo "nvidia-ctk (stand-in): failed to initialize NVML: no NVIDIA driver" >&2; exit 1 ;;
    *) echo "nvidia-ctk (stand-in): only --version and cdi are implemented" >&2; exit 1 ;;
esac
CTK
    printf '# Stand-in for the toolkit %s configuration.\n[nvidia-container-runtime]\nruntimes = ["runc"]\n' \
        "$u" >"$dir/etc/nvidia-container-runtime/config.toml"
    chmod 0755 "$dir/usr/bin/nvidia-container-runtime" "$dir/usr/bin/nvidia-ctk"
    standin nvidia-container-toolkit-base "$v" ""

    dir=$(payload nvidia-container-toolkit "$v")
    mkdir -p "$dir/usr/bin"
    printf '#!/bin/sh\n# Stand-in for nvidia-container-runtime-hook %s.\nexit 0\n' "$u" \
        >"$dir/usr/bin/nvidia-container-runtime-hook"
    chmod 0755 "$dir/usr/bin/nvidia-container-runtime-hook"
    standin nvidia-container-toolkit "$v" \
        "nvidia-container-toolkit-base (= $v), libnvidia-container-tools (>= $v), libnvidia-container-tools (<< 2.0.0)"
done
