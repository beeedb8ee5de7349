#!/usr/bin/env bash
# Usage: run.sh <eddy build dir> <consumer source dir> [C compiler]
# Installs the build into a temporary prefix, then builds and runs the
# consumers (runtime, HTTP) against the installed package: with
# find_package(eddy) and with `pkg-config --cflags --static --libs eddy` /
# `eddy_http`.  Every binary must link libeddy statically.
set -euo pipefail

build=$1
src=$2
cc=${3:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eddy-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || {
    cat "$tmp/install.log"; fail "cmake --install"; }

test -f "$prefix/include/eddy/eddy.h" || fail "eddy.h not installed"
lib=$(find "$prefix" -name libeddy.a -print -quit)
test -n "$lib" || fail "libeddy.a not installed"
if [ -n "$(find "$prefix" -name 'libeddy.so*')" ]; then
    fail "a shared libeddy was installed; eddy ships a static library only"
fi
pc=$(find "$prefix" -name eddy.pc -print -quit)
test -n "$pc" || fail "eddy.pc not installed"
cfg=$(find "$prefix" -name eddyConfig.cmake -print -quit)
test -n "$cfg" || fail "eddyConfig.cmake not installed"
echo "installed: ${lib#"$prefix"/} ${pc#"$prefix"/} ${cfg#"$prefix"/}"

# The applications: installed, and they run.
for app in eddy-echo eddy-demo eddy-load; do
    bin=$(find "$prefix" -name "$app" -type f -perm -u+x -print -quit)
    test -n "$bin" || fail "$app not installed"
    "$bin" --help >/dev/null || fail "$bin --help exited with $?"
    echo "installed: ${bin#"$prefix"/}"
done

# A binary linked against libeddy.a has the runtime's code inside it and no
# libeddy among its dynamic dependencies.
check_static() {
    local bin=$1
    local needed syms
    # Whole outputs first: `| grep -q` could SIGPIPE the producer under pipefail.
    needed=$(readelf -d "$bin") || fail "readelf $bin"
    syms=$(nm "$bin") || fail "nm $bin"
    if grep NEEDED <<<"$needed" | grep libeddy >/dev/null; then
        fail "$bin depends on a shared libeddy"
    fi
    grep -E ' T eddy_loop_init$' <<<"$syms" >/dev/null || fail "$bin does not contain eddy_loop_init"
    echo "$bin: libeddy linked in statically; needs $(grep NEEDED <<<"$needed" |
        sed -E 's/.*\[(.*)\]/\1/' | tr '\n' ' ')"
}

run_ok() {
    local bin=$1 out
    out=$("$bin") || fail "$bin exited with $?"
    test "$out" = OK || fail "$bin printed '$out', not OK"
    echo "$bin: OK"
}

step "find_package(eddy): configure and build $src out of tree"
cmake -S "$src" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$cc" >"$tmp/cmake.log" 2>&1 || {
    cat "$tmp/cmake.log"; fail "configuring the consumer"; }
eddy_dir=$(sed -n 's/^eddy_DIR:PATH=//p' "$tmp/cmake-build/CMakeCache.txt")
case $eddy_dir in
"$prefix"/*) echo "eddy_DIR=$eddy_dir" ;;
*) fail "find_package(eddy) found '$eddy_dir', not the test prefix" ;;
esac
cmake --build "$tmp/cmake-build" >"$tmp/build.log" 2>&1 || {
    cat "$tmp/build.log"; fail "building the consumer"; }
check_static "$tmp/cmake-build/consumer"
run_ok "$tmp/cmake-build/consumer"
check_static "$tmp/cmake-build/consumer_http"
# The worked example of docs/testing-with-faults.md: the fault API, installed.
test -f "$prefix/include/eddy/fault.h" || fail "eddy/fault.h not installed"
check_static "$tmp/cmake-build/consumer_fault"
run_ok "$tmp/cmake-build/consumer_fault"
# How llhttp was built (LLHTTP_STRICT_MODE) is the library's own business:
# nothing installed may hand it to a consumer's compile line.
if strict=$(grep -rIl LLHTTP_STRICT_MODE "$prefix"); then
    fail "installed files pass LLHTTP_STRICT_MODE on to consumers: $strict"
fi
run_ok "$tmp/cmake-build/consumer_http"

step "pkg-config --cflags --static --libs eddy"
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --static --libs eddy) || fail "pkg-config eddy"
echo "flags: $flags"
case " $flags " in
*" -luring "*) ;;
*) fail "pkg-config --static --libs eddy lacks -luring" ;;
esac
pc_prefix=$(pkg-config --variable=prefix eddy)
test "$(realpath "$pc_prefix")" = "$(realpath "$prefix")" ||
    fail "eddy.pc says prefix=$pc_prefix, installed at $prefix"
# shellcheck disable=SC2086 # flags are words
"$cc" -std=gnu11 -Wall -Wextra -Werror "$src/main.c" -o "$tmp/consumer-pc" $flags ||
    fail "compiling the consumer with pkg-config flags"
check_static "$tmp/consumer-pc"
run_ok "$tmp/consumer-pc"

step "pkg-config --cflags --static --libs eddy_http"
test -f "$(dirname "$pc")/eddy_http.pc" || fail "eddy_http.pc not installed"
flags=$(pkg-config --cflags --static --libs eddy_http) || fail "pkg-config eddy_http"
echo "flags: $flags"
case " $flags " in
*" -leddy_http "*"-leddy "*) ;;
*) fail "pkg-config --static --libs eddy_http lacks -leddy_http before -leddy" ;;
esac
# shellcheck disable=SC2086 # flags are words
"$cc" -std=gnu11 -Wall -Wextra -Werror "$src/http_main.c" -o "$tmp/consumer-http-pc" $flags ||
    fail "compiling the HTTP consumer with pkg-config flags"
check_static "$tmp/consumer-http-pc"
run_ok "$tmp/consumer-http-pc"

echo "install test passed"
