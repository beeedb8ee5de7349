#!/usr/bin/env bash
# Tests of the scripts in tools/ that need no benchmark to run (ctest
# "docs_scripts", label docs):
#
#   bench_build_dirs  tools/bench-echo.sh and tools/bench/bench-http.sh build
#                     in their own directory (build/bench), never in a
#                     preset's (build/default, build/asan, build/release),
#                     whose options (tests ON) they would otherwise change.
#                     A stub cmake on PATH records the calls and fails, so
#                     nothing is built or run.
#   soak_phases       tools/soak.sh fails when fewer than two phases were
#                     measured after the warm-up, and passes with two.  A
#                     stub wrk on PATH reports a fixed count per run, so
#                     the soak takes a second against the real eddy-demo.
#   check_docs        tools/check-docs.py fails on each broken fixture in
#                     tests/tools/docs-fixtures (a path, an option, a preset,
#                     a name or link that does not exist, a command that
#                     fails) with the right message, and passes good.md.
#
# usage: test_scripts.sh SOURCE_DIR BUILD_DIR [test ...]
set -uo pipefail

src=${1:?source dir}
build=${2:?build dir}
shift 2
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(bench_build_dirs soak_phases check_docs)

tmp=$(mktemp -d /tmp/eddy-test-scripts.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# Every command is bounded: a script that hangs fails the test.
bounded() { timeout -k 5 "$@"; }

bench_build_dirs() {
    local stubs=$tmp/stubs-bench log=$tmp/cmake.log
    mkdir -p "$stubs"
    # cmake: records its arguments, then fails (set -e stops the script).
    cat >"$stubs/cmake" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >>"$log"
exit 1
EOF
    # bench-http.sh checks that wrk and nginx exist before it builds.
    printf '#!/bin/sh\nexit 0\n' >"$stubs/wrk"
    cp "$stubs/wrk" "$stubs/nginx"
    chmod +x "$stubs"/*
    local script
    for script in tools/bench-echo.sh tools/bench/bench-http.sh; do
        : >"$log"
        local args=(--rounds 1 --time 1)
        [ "$script" = tools/bench/bench-http.sh ] && args+=(--no-setup)
        PATH="$stubs:$PATH" bounded 30 "$src/$script" "${args[@]}" >"$tmp/out" 2>&1
        local rc=$?
        [ "$rc" -ne 0 ] || fail "$script: went on although cmake failed"
        if ! [ -s "$log" ]; then
            fail "$script: never called cmake"; cat "$tmp/out" >&2; continue
        fi
        echo "$script called: $(head -n 1 "$log")"
        grep -q -- "-B $src/build/bench " "$log" ||
            fail "$script: did not configure $src/build/bench: $(cat "$log")"
        grep -q -- "-DCMAKE_BUILD_TYPE=Release" "$log" ||
            fail "$script: not a Release build: $(cat "$log")"
        local p
        for p in default asan release; do
            if grep -qE -- "-B $src/build/$p( |/?\$)" "$log"; then
                fail "$script: configures the preset directory build/$p: $(cat "$log")"
            fi
        done
        # --build-dir still picks another directory.
        : >"$log"
        PATH="$stubs:$PATH" bounded 30 "$src/$script" "${args[@]}" --build-dir "$tmp/bd" \
            >"$tmp/out" 2>&1
        grep -q -- "-B $tmp/bd " "$log" || fail "$script --build-dir: $(cat "$log")"
    done
}

soak_phases() {
    local stubs=$tmp/stubs-soak demo=$build/apps/demo/eddy-demo
    [ -x "$demo" ] || { fail "soak_phases: no $demo"; return; }
    mkdir -p "$stubs"
    # wrk: 100 requests per run, no errors.
    cat >"$stubs/wrk" <<'EOF'
#!/bin/sh
echo "Running 1s test @ $*"
echo "  100 requests in 1.00s, 12.00KB read"
exit 0
EOF
    chmod +x "$stubs/wrk"
    # One phase (churn + keep-alive = 200 requests) reaches REQUESTS: the
    # warm-up is the only sample, nothing to compare it with.
    PATH="$stubs:$PATH" REQUESTS=200 CHURNS=100 SAMPLE_S=0.2 \
        bounded 60 "$src/tools/soak.sh" "$demo" >"$tmp/soak1" 2>&1
    local rc=$?
    cat "$tmp/soak1"
    [ "$rc" -eq 1 ] || fail "soak with one phase: exit $rc, want 1"
    grep -q 'soak: FAIL: 0 phases measured after the warm-up; a soak needs at least 2' \
        "$tmp/soak1" || fail "soak with one phase: no clear message"
    grep -q 'soak: PASS' "$tmp/soak1" && fail "soak with one phase printed PASS"

    # Three phases (200 + 100 + 200 requests): warm-up and two measured.
    PATH="$stubs:$PATH" REQUESTS=500 CHURNS=100 SAMPLE_S=0.2 \
        bounded 60 "$src/tools/soak.sh" "$demo" >"$tmp/soak3" 2>&1
    rc=$?
    cat "$tmp/soak3"
    [ "$rc" -eq 0 ] || fail "soak with three phases: exit $rc, want 0"
    grep -q 'soak: 500 requests, 200 connection churns, 3 phases' "$tmp/soak3" ||
        fail "soak with three phases: wrong totals"
    grep -q 'soak: PASS' "$tmp/soak3" || fail "soak with three phases: no PASS"

    # MIN_PHASES=3 makes a tiny soak (the docs' smoke run) long enough.
    PATH="$stubs:$PATH" REQUESTS=1 CHURNS=1 MIN_PHASES=3 SAMPLE_S=0.2 \
        bounded 60 "$src/tools/soak.sh" "$demo" >"$tmp/soak4" 2>&1
    rc=$?
    [ "$rc" -eq 0 ] || { cat "$tmp/soak4"; fail "soak with MIN_PHASES=3: exit $rc, want 0"; }
    grep -q 'soak: 500 requests, 200 connection churns, 3 phases' "$tmp/soak4" ||
        { cat "$tmp/soak4"; fail "soak with MIN_PHASES=3: wrong totals"; }
}

check_docs() {
    local fx=tests/tools/docs-fixtures
    # fixture, then a message the failure must print
    local cases=(
        "bad-path.md|no such path: build/tools/bench/bench-timeouts"
        "bad-flag.md|build/release/tools/load/eddy-load has no option --no-such-flag"
        "bad-script-flag.md|tools/bench/bench-http.sh has no option --no-such-option"
        "bad-preset.md|no such preset: nosuch"
        "bad-name.md|names NOWHERE.md, which is not in the repository"
        "bad-name.md|\`tools/nothing.c\`: no such path"
        "bad-name.md|link to nothing/here.md: no such file"
        "bad-exit.md|FAIL $fx/bad-exit.md:6: exit 2"
        "bad-console.md|no such path: build/tools/load/eddy-load"
        "bad-nobuild.md|build/bench/apps/demo/eddy-demo not built"
    )
    local c f want rc
    for c in "${cases[@]}"; do
        f=${c%%|*} want=${c#*|}
        bounded 60 python3 "$src/tools/check-docs.py" --source "$src" --build "$build" "$fx/$f" \
            >"$tmp/docs.out" 2>&1
        rc=$?
        [ "$rc" -eq 1 ] || { fail "check-docs $f: exit $rc, want 1"; cat "$tmp/docs.out" >&2; }
        grep -qF -- "$want" "$tmp/docs.out" ||
            { fail "check-docs $f: no \"$want\""; cat "$tmp/docs.out" >&2; }
    done
    bounded 60 python3 "$src/tools/check-docs.py" --source "$src" --build "$build" "$fx/good.md" \
        >"$tmp/docs.out" 2>&1
    rc=$?
    cat "$tmp/docs.out"
    [ "$rc" -eq 0 ] || fail "check-docs good.md: exit $rc, want 0"
    grep -q "check-docs: all passed" "$tmp/docs.out" || fail "check-docs good.md: not all passed"
    [ "$(grep -c '^  ok ' "$tmp/docs.out")" -eq 3 ] || fail "check-docs good.md: not 3 commands ok"
}

for t in "${tests[@]}"; do
    echo "=== $t"
    before=$failures
    "$t"
    [ "$failures" -eq "$before" ] && echo "--- $t: ok" || echo "--- $t: FAILED"
done
[ "$failures" -eq 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
echo "all passed"
