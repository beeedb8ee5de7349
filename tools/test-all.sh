#!/usr/bin/env bash
# The whole suite, from a fresh clone: set-up, then configure, build and
# ctest for preset "default" (RelWithDebInfo) and preset "asan" (Debug with
# ASan/UBSan/LSan).  Every test runs twice in each preset: as is and as on a
# 5.10 kernel (the *_compat twins, EDDY_COMPAT=5.10).  Exits non-zero on any
# failure.  Then the HTTP fuzzer for EDDY_FUZZ_SECS (default 60) seconds.
# Optional arguments: the presets to run instead of both (and no fuzzing).
# Preset "default" also runs the suite under Debian's own 5.10 and 6.1
# kernels in QEMU (tests kernel_5.10, kernel_6.1; tests/kernel.cmake):
# EDDY_KERNEL_TESTS=0 leaves them out.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(default asan)
jobs=${EDDY_JOBS:-2}

kernels=${EDDY_KERNEL_TESTS:-1}
[ "$kernels" = 0 ] && kernels=OFF || kernels=ON
setup_opts=(--browser) # the demo page's browser test (label browser)
[ "$kernels" = ON ] && setup_opts+=(--vm)
tools/setup.sh "${setup_opts[@]}" || { echo "test-all: tools/setup.sh failed" >&2; exit 1; }

summary=()
failed=0
start_all=$SECONDS
for p in "${presets[@]}"; do
    start=$SECONDS
    log=build/$p/test-all.log
    echo "=== preset $p: configure"
    opts=()
    [ "$p" = default ] && opts+=(-DEDDY_KERNEL_TESTS=$kernels)
    if ! cmake --preset "$p" "${opts[@]}"; then
        summary+=("$p: CONFIGURE FAILED"); failed=1; continue
    fi
    echo "=== preset $p: build"
    if ! cmake --build --preset "$p" -j "$jobs"; then
        summary+=("$p: BUILD FAILED"); failed=1; continue
    fi
    echo "=== preset $p: test"
    # Each test's TIMEOUT property bounds it; the preset gives a default.
    ctest --preset "$p" -j "$jobs" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    line=$(grep -E 'tests passed|tests failed' "$log" | tail -n 1)
    [ -n "$line" ] || line="ctest exited with $rc"
    if [ "$rc" -ne 0 ]; then
        failed=1
        fails=$(sed -n '/The following tests FAILED:/,$p' "$log" | grep -E '^[[:space:]]+[0-9]+ - ' |
            sed -E 's/^[[:space:]]+[0-9]+ - //' | tr '\n' ';' | sed 's/;$//')
        summary+=("$p: FAILED: $line (${fails:-see $log}) [$((SECONDS - start)) s]")
    else
        summary+=("$p: ok: $line [$((SECONDS - start)) s]")
    fi
done

# The fuzzer, bounded (EDDY_FUZZ_SECS, default 60; 0 skips it), when the
# default presets run: ASan+UBSan, seeded from the bad-bytes corpus.
fuzz_secs=${EDDY_FUZZ_SECS:-60}
if [ $# -eq 0 ] && [ "$fuzz_secs" -gt 0 ]; then
    start=$SECONDS
    echo "=== fuzz: tools/fuzz.sh $fuzz_secs"
    if tools/fuzz.sh "$fuzz_secs" > build/fuzz.log 2>&1; then
        summary+=("fuzz: ok: $(grep -E 'stat::number_of_executed_units' build/fuzz.log | tr -s ' ' | cut -d' ' -f2) inputs, no crash [$((SECONDS - start)) s]")
    else
        failed=1
        tail -n 40 build/fuzz.log
        summary+=("fuzz: FAILED (see build/fuzz.log) [$((SECONDS - start)) s]")
    fi
fi
echo
echo "=== test-all summary ($((SECONDS - start_all)) s)"
for s in "${summary[@]}"; do
    echo "  $s"
done
if [ "$failed" -ne 0 ]; then
    echo "=== FAILED"
    exit 1
fi
echo "=== ALL PASSED"
