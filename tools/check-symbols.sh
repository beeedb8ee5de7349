#!/usr/bin/env bash
# Usage: check-symbols.sh <eddy build dir>
# Installs the build into a temporary prefix and checks what the installed
# static archives export: libeddy.a and libeddy_http.a define no global
# symbol outside the public prefix eddy_ (and libeddy_llhttp.a, when eddy
# built llhttp itself, none outside llhttp's own llhttp_), so a program
# that links them may name its own functions as it likes.  Then it proves
# that: a program defining functions named like the runtime's and the HTTP
# layer's internals links against every member of both archives.
# Exits 1 listing each offending symbol with its archive member.
set -euo pipefail

build=$1
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eddy-symbols.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || {
    cat "$tmp/install.log"; fail "cmake --install"; }
libdir=$(dirname "$(find "$prefix" -name libeddy.a -print -quit)")
test -f "$libdir/libeddy.a" || fail "libeddy.a not installed"
test -f "$libdir/libeddy_http.a" || fail "libeddy_http.a not installed"

# check <archive> <allowed ERE> <a symbol that must be there>
bad=0
check() {
    local ar=$1 allow=$2 must=$3 defs
    # -A names the member; posix format: "archive[member]: name type value size".
    defs=$(nm -A -g --defined-only --format=posix "$ar" 2>/dev/null) || fail "nm $ar"
    grep -E ": $must [TD] " <<<"$defs" >/dev/null || fail "$ar does not define $must"
    local leaks
    leaks=$(awk -v allow="$allow" '$2 !~ allow { sub(/.*\[/, "", $1); sub(/\]:$/, "", $1)
        print "  " $2 " (" $3 ", " $1 ")" }' <<<"$defs")
    if [ -n "$leaks" ]; then
        echo "${ar#"$prefix"/} exports $(wc -l <<<"$leaks") global symbol(s) not matching $allow:"
        echo "$leaks"
        bad=1
    else
        echo "${ar#"$prefix"/}: $(wc -l <<<"$defs") global symbols, all matching $allow"
    fi
}
check "$libdir/libeddy.a" '^eddy_[^_]' eddy_loop_init
check "$libdir/libeddy_http.a" '^eddy_[^_]' eddy_http_server_init
if [ -f "$libdir/libeddy_llhttp.a" ]; then
    check "$libdir/libeddy_llhttp.a" '^llhttp_' llhttp_init
fi
# A user's functions named like eddy's internals, with every member of both
# archives linked in (so no member escapes by not being needed).
cat >"$tmp/user.c" <<'EOF'
#include <eddy/http.h>
/* Names eddy uses inside: a user may have their own. */
long mono_ns(void) { return 1; }
int grow(void) { return 2; }
int pool_take(void) { return 3; }
int op_start(void) { return 4; }
int url_parse(void) { return 5; }
int conn_close(void) { return 6; }
int main(void) { return eddy_strerror(0) == 0; }
EOF
export PKG_CONFIG_PATH=$libdir/pkgconfig
libs=$(pkg-config --static --libs eddy_http) || fail "pkg-config eddy_http"
# shellcheck disable=SC2086 # libs are words
"$cc" -std=gnu11 -I"$prefix/include" "$tmp/user.c" -o "$tmp/user" \
    -Wl,--whole-archive "$libdir/libeddy_http.a" "$libdir/libeddy.a" -Wl,--no-whole-archive \
    $libs 2>"$tmp/link.log" || {
    grep -m 8 -i 'multiple definition' "$tmp/link.log" || head -n 8 "$tmp/link.log"
    fail "a program with its own mono_ns, grow, pool_take, op_start, url_parse, conn_close does not link with eddy"
}
"$tmp/user" || fail "the program linked with eddy exited with $?"
echo "a program with its own mono_ns, grow, pool_take, op_start, url_parse, conn_close links with eddy"
[ "$bad" = 0 ] || fail "the installed archives export internal symbols (see above)"
echo "symbols test passed"
