#!/usr/bin/env bash
# Usage: check-symbols.sh <eddy build dir>
# Installs the build into a temporary prefix and checks what the installed
# static archives export: libeddy.a and libeddy_http.a define no global
# symbol outside the public prefix eddy_ (the llhttp eddy builds itself,
# when no system llhttp is found, is inside libeddy_http.a and local there:
# no libeddy_llhttp.a is installed), so a program that links them may name
# its own functions as it likes.  Then it proves that: a program defining
# functions named like the runtime's and the HTTP layer's internals (and,
# when llhttp is inside, llhttp's own: a program may link another llhttp)
# links against every member of both archives.
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
# llhttp inside libeddy_http.a (defined there, as a local symbol) or a
# system one (undefined there: the consumer links it).
# An llhttp eddy built installed as an archive of its own would hand the
# program every llhttp_ symbol (and a program with another llhttp one of
# the two, silently).
[ ! -e "$libdir/libeddy_llhttp.a" ] ||
    fail "libeddy_llhttp.a is installed: its llhttp_ symbols are global (fold it into libeddy_http.a)"
own_llhttp=0
if nm -A --defined-only --format=posix "$libdir/libeddy_http.a" 2>/dev/null |
    grep -E ': llhttp_init [tT] ' >/dev/null; then
    own_llhttp=1
    echo "libeddy_http.a holds its own llhttp, local"
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
EOF
if [ "$own_llhttp" = 1 ]; then
    # Another llhttp of the program's own (here: one that parses nothing).
    cat >>"$tmp/user.c" <<'EOF'
void llhttp_init(void *p, int type, const void *settings) { (void)p; (void)type; (void)settings; }
int llhttp_execute(void *p, const char *data, unsigned long len) { (void)p; (void)data; (void)len; return 1; }
EOF
fi
cat >>"$tmp/user.c" <<'EOF'
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
if [ "$own_llhttp" = 1 ]; then
    # eddy's HTTP layer still parses with its own llhttp when the program
    # has another: the installed-package HTTP consumer (a server answered
    # by the client), linked with an llhttp whose every call aborts.
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    cat >"$tmp/other_llhttp.c" <<'EOF'
#include <stdlib.h>
void llhttp_init(void *p, int type, const void *settings) { (void)p; (void)type; (void)settings; abort(); }
int llhttp_execute(void *p, const char *data, unsigned long len) { (void)p; (void)data; (void)len; abort(); }
EOF
    # shellcheck disable=SC2086 # libs are words
    "$cc" -std=gnu11 -I"$prefix/include" "$here/../tests/install/consumer/http_main.c" \
        "$tmp/other_llhttp.c" -o "$tmp/user_http" "$libdir/libeddy_http.a" "$libdir/libeddy.a" \
        $libs 2>"$tmp/link_http.log" || {
        head -n 8 "$tmp/link_http.log"
        fail "the HTTP consumer with an llhttp of its own does not link with eddy"
    }
    timeout 20 "$tmp/user_http" >/dev/null ||
        fail "the HTTP consumer with an llhttp of its own failed ($?): eddy called the program's llhttp?"
    echo "a program with an llhttp of its own links, and eddy parses with its own"
fi
[ "$bad" = 0 ] || fail "the installed archives export internal symbols (see above)"
echo "symbols test passed"
