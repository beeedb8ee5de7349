#!/usr/bin/env bash
# Fuzzes the HTTP server's request path with libFuzzer, ASan and UBSan:
#   tools/fuzz.sh [seconds]        (default 60)
# Builds with clang in $FUZZ_BUILD (default build/fuzz), seeds from the
# bad-bytes corpus (tests/reliability/corpus.txt, decoded by
# `test_corpus --dump`), keeps what it finds in $FUZZ_BUILD/found, and
# exits non-zero on a crash (the input is left as $FUZZ_BUILD/crash-*).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-60}
b=${FUZZ_BUILD:-$root/build/fuzz}
command -v clang >/dev/null || { echo "fuzz.sh: clang is needed" >&2; exit 2; }
flags="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
cmake -S "$root" -B "$b" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DEDDY_FUZZ=ON >/dev/null
cmake --build "$b" -j "${EDDY_JOBS:-2}" --target fuzz_http test_corpus >/dev/null
rm -rf "$b/seeds"
"$b/tests/test_corpus" --dump "$b/seeds"
mkdir -p "$b/found"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# -timeout: one input taking 10 s is a hang; the server's own deadline for
# a connection after EOF is 5 s (fuzz_http.c).
set +e
"$b/tests/fuzz_http" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -dict="$root/tests/reliability/fuzz/http.dict" -artifact_prefix="$b/crash-" \
    -print_final_stats=1 "$b/found" "$b/seeds" 2>&1 | tee "$b/fuzz.log" | grep -vE '^#[0-9]+.*(NEW|REDUCE|pulse)|# Uses: '
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    echo "fuzz.sh: FAILED (exit $rc); the input: $(ls "$b"/crash-* 2>/dev/null | head -n 1)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in $secs s"
