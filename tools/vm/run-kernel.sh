#!/usr/bin/env bash
# Runs a command under a real Debian kernel booted with QEMU: the host's / is
# shared read-only (virtio-9p), the given directories read-write at the same
# paths, and the command runs there as root in the host's current directory.
# Prints the guest's output; exits with the command's status.
#
#   tools/vm/run-kernel.sh [options] RELEASE [--] COMMAND [ARG...]
#
#   e.g. tools/vm/run-kernel.sh --rw build/default 6.1 -- \
#            ctest --test-dir build/default -LE 'compat|kernel' --output-on-failure
#
# RELEASE: bullseye or 5.10 (Debian 11's kernel), bookworm or 6.1 (Debian 12's).
# Options:
#   --rw DIR        share DIR read-write (repeatable; default: the current
#                   directory, which must not be /)
#   --timeout SECS  the whole run, boot included (default 1800, or
#                   $EDDY_VM_TIMEOUT); a guest still running then is killed and
#                   the run fails with status 124
#   --kvm | --tcg   force the accelerator (default: KVM when /dev/kvm works,
#                   else TCG; a KVM guest that has not started init within
#                   $EDDY_VM_KVM_PROBE_SECS s (default 20) is killed and the run
#                   is redone under TCG, and KVM is not tried again until the
#                   host reboots)
#   --cpus N        vCPUs (default 2)   --mem MiB   guest memory (default 4096)
# Environment: EDDY_VM_CACHE (default ~/.cache/eddy-vm) holds the kernels;
# EDDY_VM_MIRROR (default http://deb.debian.org/debian); EDDY_VM_KERNEL_PKG
# picks another linux-image package of the release's suite.  The command sees
# the host's HOME, LANG and every EDDY_*, CTEST_*, ASAN_*, UBSAN_*, LSAN_*
# variable, the host's limits on open files and locked memory, and the host's
# PATH without pyenv's directories (its shims take 20 to 50 s to start one
# python3 under emulation; Debian's python3 starts in 1.5 s) unless
# EDDY_VM_PATH gives the PATH.
# Needs qemu-system-x86 and busybox-static (tools/setup.sh --vm).
set -euo pipefail

# The whole script is one function, read before it runs: editing this file
# while a guest runs cannot derail the run (bash reads scripts as it goes).
main() {
me=run-kernel.sh
die() { echo "$me: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

rw=()
timeout_s=${EDDY_VM_TIMEOUT:-1800}
accel=auto
cpus=2
mem=4096
while [ $# -gt 0 ]; do
    case $1 in
    --rw) [ $# -ge 2 ] || die "--rw needs a directory"; rw+=("$2"); shift 2 ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; timeout_s=$2; shift 2 ;;
    --kvm) accel=kvm; shift ;;
    --tcg) accel=tcg; shift ;;
    --cpus) cpus=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1' (try --help)" ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || { usage >&2; exit 2; }
release=$1; shift
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || die "no command given"
case $release in
5.10 | bullseye) release=bullseye ;;
6.1 | bookworm) release=bookworm ;;
*) die "unknown release '$release' (bullseye/5.10 or bookworm/6.1)" ;;
esac
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout: '$timeout_s' is not a number of seconds"

for tool in qemu-system-x86_64 dpkg-deb apt-get apt-cache; do
    command -v "$tool" >/dev/null || die "$tool is missing: run tools/setup.sh --vm"
done
# The guest runs busybox before any library is there: it must be static
# (busybox-static's /bin/busybox, not busybox's).
busybox=/bin/busybox
{ ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic' || die "$busybox is not static: run tools/setup.sh --vm"

cache=${EDDY_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eddy-vm}
mirror=${EDDY_VM_MIRROR:-http://deb.debian.org/debian}
kdir=$cache/$release
mkdir -p "$kdir"

# --- the kernel: fetched once per release with a private apt configuration
# (its own sources, lists, cache and an empty dpkg status), so the host's apt
# set-up is neither used nor changed.
fetch_kernel() {
    local a=$kdir/apt
    mkdir -p "$a/lists/partial" "$a/archives/partial" "$a/etc"
    : >"$a/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $release main" \
        >"$a/etc/sources.list"
    local opts=(-o Dir::Etc::sourcelist="$a/etc/sources.list" -o Dir::Etc::sourceparts=/dev/null
        -o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts=/dev/null
        -o Dir::State="$a" -o Dir::State::lists="$a/lists" -o Dir::State::status="$a/status"
        -o Dir::Cache="$a" -o Dir::Cache::archives="$a/archives"
        -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache=""
        -o APT::Architecture=amd64 -o APT::Architectures=amd64 -o Acquire::Languages=none
        -o Debug::NoLocking=1 -o APT::Sandbox::User=root -q)
    echo "$me: fetching Debian $release's kernel package list from $mirror" >&2
    apt-get "${opts[@]}" update >&2 || die "apt-get update for $release failed"
    local pkg=${EDDY_VM_KERNEL_PKG:-}
    if [ -z "$pkg" ]; then
        pkg=$(apt-cache "${opts[@]}" depends linux-image-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
        [ -n "$pkg" ] || die "no linux-image-amd64 in $release"
    fi
    echo "$me: downloading $pkg" >&2
    rm -f "$kdir"/*.deb
    (cd "$kdir" && apt-get "${opts[@]}" download "$pkg" >&2) || die "apt-get download $pkg failed"
    local deb
    deb=$(ls "$kdir"/"$pkg"_*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || die "the download of $pkg left no .deb"
    rm -rf "$kdir/x" && mkdir -p "$kdir/x"
    dpkg-deb -x "$deb" "$kdir/x"
    local kver
    kver=$(ls "$kdir/x/lib/modules" | head -n 1)
    [ -f "$kdir/x/boot/vmlinuz-$kver" ] || die "$deb has no boot/vmlinuz-$kver"
    # Keep what the guest needs: the kernel and, in load order, the modules for
    # virtio-pci, 9p over virtio and virtio-rng with all they depend on (the
    # .deb has no modules.dep: depmod makes it); built-in ones are skipped.
    # The rest of the unpacked tree and the .deb go.
    local mods=$kdir/x/lib/modules/$kver
    "$busybox" depmod -b "$kdir/x" "$kver" || die "depmod for $kver failed"
    rm -rf "$kdir/k" && mkdir -p "$kdir/k/modules"
    cp "$kdir/x/boot/vmlinuz-$kver" "$kdir/k/vmlinuz"
    declare -A seen=()
    local order=() name path m
    add_mod() { # $1: path relative to the modules dir
        local m=$1 dep
        [ -n "${seen[$m]:-}" ] && return 0
        seen[$m]=1
        for dep in $(sed -n "s|^$m: *||p" "$mods/modules.dep"); do
            add_mod "$dep"
        done
        order+=("$m")
    }
    for name in virtio_pci virtio_rng 9pnet_virtio 9p; do
        path=$(grep -E "(^|/)$name\.ko(\.[a-z]+)?:" "$mods/modules.dep" | head -n 1 | cut -d: -f1 || true)
        if [ -n "$path" ]; then
            add_mod "$path"
        elif ! grep -qE "(^|/)$name\.ko" "$mods/modules.builtin" 2>/dev/null; then
            [ "$name" = virtio_rng ] || die "kernel $kver has no module $name"
        fi
    done
    : >"$kdir/k/modules.load"
    for m in "${order[@]}"; do
        b=$(basename "$m")
        case $b in
        *.ko.xz) xz -dc "$mods/$m" >"$kdir/k/modules/${b%.xz}"; b=${b%.xz} ;;
        *.ko.zst) zstd -qdc "$mods/$m" >"$kdir/k/modules/${b%.zst}"; b=${b%.zst} ;;
        *.ko.gz) gzip -dc "$mods/$m" >"$kdir/k/modules/${b%.gz}"; b=${b%.gz} ;;
        *) cp "$mods/$m" "$kdir/k/modules/$b" ;;
        esac
        echo "$b" >>"$kdir/k/modules.load"
    done
    echo "$kver" >"$kdir/k/release"
    basename "$deb" >"$kdir/k/package"
    rm -rf "$kdir/x" "$deb" "$a"
    mv "$kdir/k" "$kdir/kernel"
}
[ -f "$kdir/kernel/modules.load" ] || { rm -rf "$kdir/kernel"; fetch_kernel; }
kver=$(cat "$kdir/kernel/release")
# --- the initramfs: static busybox, the modules, /init; rebuilt per run
# (it is small) in a temporary directory.
work=$(mktemp -d "${TMPDIR:-/tmp}/eddy-vm.XXXXXX")
qpid=
tpid=
cleanup() {
    [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
    [ -n "$tpid" ] && kill "$tpid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/root/bin" "$work/root/lib/modules" "$work/root/mnt/host" "$work/root/proc" \
    "$work/root/sys" "$work/root/dev"
cp "$busybox" "$work/root/bin/busybox"
cp "$kdir/kernel/modules/"*.ko "$work/root/lib/modules/"
cp "$kdir/kernel/modules.load" "$work/root/modules.load"

nonce=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
cwd=$(pwd -P)
[ ${#rw[@]} -gt 0 ] || rw=("$cwd")
rwpaths=()
for d in "${rw[@]}"; do
    d=$(cd "$d" 2>/dev/null && pwd -P) || die "--rw: no directory '$d'"
    [ "$d" != / ] || die "--rw: the whole root cannot be shared read-write"
    rwpaths+=("$d")
done

# The command, as a bash script run in the guest's chroot of the host's /.
{
    echo "cd $(printf %q "$cwd") || exit 126"
    gpath=${EDDY_VM_PATH:-$(tr ':' '\n' <<<"$PATH" | grep -v '/\.pyenv/' | paste -sd:)}
    echo "export PATH=$(printf %q "$gpath") HOME=$(printf %q "${HOME:-/root}") LANG=$(printf %q "${LANG:-C.UTF-8}") TERM=dumb"
    while IFS='=' read -r n _; do
        case $n in
        EDDY_* | CTEST_* | ASAN_* | UBSAN_* | LSAN_* | TSAN_*)
            echo "export $n=$(printf %q "${!n}")" ;;
        esac
    done < <(env)
    printf 'ulimit -Hn %s; ulimit -Sn %s; ulimit -Hl %s; ulimit -Sl %s\n' \
        "$(ulimit -Hn)" "$(ulimit -Sn)" "$(ulimit -Hl)" "$(ulimit -Sl)"
    printf 'exec'
    printf ' %q' "$@"
    echo
} >"$work/root/command"

{
    cat <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
EOF
    echo "echo \"eddy-vm-$nonce: init on kernel \$(uname -r)\""
    cat <<'EOF'
fail() { echo "eddy-vm: $*"; echo o > /proc/sysrq-trigger; poweroff -f; sleep 60; }
while read -r m; do
    insmod "/lib/modules/$m" || fail "insmod $m failed"
done < /modules.load
# A virtio device needs a moment to show up after its driver loads.
n=0
until grep -q . /sys/bus/virtio/drivers/9pnet_virtio/virtio*/mount_tag 2>/dev/null; do
    n=$((n + 1)); [ $n -lt 100 ] || fail "no 9p device appeared"; sleep 0.1
done
o=trans=virtio,version=9p2000.L,msize=262144,access=any
mount -t 9p -o ro,$o,cache=loose hostroot /mnt/host || fail "mounting the host's / failed"
EOF
    i=0
    for d in "${rwpaths[@]}"; do
        echo "mount -t 9p -o rw,\$o,cache=mmap rw$i /mnt/host$(printf %q "$d") || fail \"mounting $d failed\""
        i=$((i + 1))
    done
    cat <<'EOF'
mount -t proc proc /mnt/host/proc
mount -t sysfs sysfs /mnt/host/sys
mount -t devtmpfs devtmpfs /mnt/host/dev
mkdir -p /mnt/host/dev/pts /mnt/host/dev/shm
mount -t devpts devpts /mnt/host/dev/pts
mount -t tmpfs -o mode=1777 shm /mnt/host/dev/shm
mount -t tmpfs -o mode=1777 tmp /mnt/host/tmp
mount -t tmpfs -o mode=755 run /mnt/host/run 2>/dev/null
ip link set lo up
hostname eddy-vm
cp /command /mnt/host/tmp/.eddy-vm-command
chroot /mnt/host /bin/bash /tmp/.eddy-vm-command < /dev/null
rc=$?
sync
EOF
    echo "echo \"eddy-vm-$nonce: exit status \$rc\""
    echo 'echo o > /proc/sysrq-trigger; poweroff -f; sleep 60'
} >"$work/root/init"
chmod 755 "$work/root/init"
(cd "$work/root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz")

# --- boot it.
kvm_verdict=$cache/kvm-hangs
boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
if [ "$accel" = auto ]; then
    accel=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ] && ! grep -qx "$boot_id" "$kvm_verdict" 2>/dev/null; then
        accel=kvm
    fi
fi

log=$work/console.log
run_guest() { # $1: kvm or tcg; sets guest_rc; returns 3 when KVM hung before init
    local acc=$1 cpu start now probe=${EDDY_VM_KVM_PROBE_SECS:-20}
    if [ "$acc" = kvm ]; then cpu=(-accel kvm -cpu host); else cpu=(-accel tcg,thread=multi -cpu max); fi
    local share=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
    local i=0 d
    for d in "${rwpaths[@]}"; do
        share+=(-virtfs "local,path=$d,mount_tag=rw$i,security_model=none,multidevs=remap")
        i=$((i + 1))
    done
    : >"$log"
    echo "$me: booting Debian $release's $kver ($(cat "$kdir/kernel/package")) under ${acc^^}, $cpus vCPUs, $mem MiB" >&2
    qemu-system-x86_64 -nodefaults -no-user-config -display none -monitor none -no-reboot \
        "${cpu[@]}" -smp "$cpus" -m "$mem" \
        -kernel "$kdir/kernel/vmlinuz" -initrd "$work/initrd.gz" \
        -append "console=ttyS0 panic=-1 loglevel=4 random.trust_cpu=on rdinit=/init" \
        -serial "file:$log" -device virtio-rng-pci "${share[@]}" \
        </dev/null >"$work/qemu.out" 2>&1 &
    qpid=$!
    tail -n +1 -F --pid="$qpid" "$log" 2>/dev/null | tr -d '\r' &
    tpid=$!
    start=$SECONDS
    while kill -0 "$qpid" 2>/dev/null; do
        now=$SECONDS
        if [ "$acc" = kvm ] && [ $((now - start)) -ge "$probe" ] && ! grep -q "eddy-vm-$nonce: init" "$log"; then
            kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null || true; qpid=
            wait "$tpid" 2>/dev/null || true; tpid=
            return 3
        fi
        if [ $((now - start0)) -ge "$timeout_s" ]; then
            kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null || true; qpid=
            wait "$tpid" 2>/dev/null || true; tpid=
            echo "$me: TIMEOUT: the guest ($release, $kver) did not finish within $timeout_s s; killed" >&2
            exit 124
        fi
        sleep 1
    done
    wait "$qpid" 2>/dev/null && qrc=0 || qrc=$?
    qpid=
    wait "$tpid" 2>/dev/null || true
    tpid=
    if [ -s "$work/qemu.out" ]; then
        sed "s/^/$me: qemu: /" "$work/qemu.out" >&2
    fi
    # KVM that fails before init (a nested KVM refusing the CPU model) is
    # a KVM problem too: the command never ran.
    if [ "$acc" = kvm ] && ! grep -q "eddy-vm-$nonce: init" "$log"; then
        return 3
    fi
    guest_rc=$(tr -d '\r' <"$log" | sed -n "s/^eddy-vm-$nonce: exit status \([0-9]*\)$/\1/p" | tail -n 1)
    return 0
}

start0=$SECONDS
guest_rc=
qrc=0
if [ "$accel" = kvm ]; then
    if run_guest kvm; then :; else
        echo "$me: the KVM guest failed or had not started init within ${EDDY_VM_KVM_PROBE_SECS:-20} s: redoing under TCG (and using TCG on this host until it reboots)" >&2
        echo "$boot_id" >>"$kvm_verdict"
        run_guest tcg
    fi
else
    run_guest tcg
fi
if [ -z "$guest_rc" ]; then
    echo "$me: FAILED: the guest ($release, $kver) ended without reporting the command's status (qemu exit $qrc; see the console output above)" >&2
    exit 125
fi
echo "$me: $release ($kver): command exited with $guest_rc after $((SECONDS - start0)) s" >&2
exit "$guest_rc"
}
main "$@"
