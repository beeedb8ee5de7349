#!/usr/bin/env bash
# Installs what eddy needs to build and test on Debian 12, and nothing that
# is already there.  Safe to run again and again.
#   tools/setup.sh           build + test dependencies
#   tools/setup.sh --bench   also wrk and nginx-light (benchmarks only)
#   tools/setup.sh --vm      also qemu-system-x86 and busybox-static (the kernel tests)
#   tools/setup.sh --browser also chromium, chromium-driver, python3-selenium (the demo page's test)
set -euo pipefail

packages=(build-essential gcc clang cmake pkg-config liburing-dev libcmocka-dev
          node-llhttp curl python3 ca-certificates strace slowhttptest)
for arg in "$@"; do
    case $arg in
    --bench) packages+=(wrk nginx-light) ;;
    --vm) packages+=(qemu-system-x86 busybox-static) ;;
    --browser) packages+=(chromium chromium-driver python3-selenium) ;;
    -h | --help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    echo "setup.sh: this script knows Debian/Ubuntu (apt) only; install by hand:" >&2
    echo "  ${packages[*]}" >&2
    exit 1
fi

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all ${#packages[@]} packages already installed"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "setup.sh: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
        exit 1
    }
    sudo=(sudo)
fi

echo "setup: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
for p in "${missing[@]}"; do
    installed "$p" || { echo "setup.sh: $p did not install" >&2; exit 1; }
done
echo "setup: done"
