#!/usr/bin/env bash
# deps.sh - install the Debian 12 packages ember builds and tests with, only
# when something is missing (sourced by start.sh and test.sh).
ember_deps() {
    local pkgs=(build-essential cmake pkg-config libuv1-dev libjansson-dev libseccomp-dev
                libarchive-dev libcriterion-dev libssl-dev node-llhttp curl)
    case "${1:-}" in
    test) pkgs+=(clang libclang-rt-14-dev) ;;     # the libFuzzer drivers
    bench) pkgs+=(wrk nginx-light crun) ;;        # the peers of bench/*.sh
    esac
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "ember: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
