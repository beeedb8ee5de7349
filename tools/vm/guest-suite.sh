#!/usr/bin/env bash
# The suite as a kernel guest runs it (tests kernel_5.10 and kernel_6.1, via
# tools/vm/run-kernel.sh): every test of the build directory DIR but the
# compat twins, the kernel tests, and the docs and install tests (they
# check the documentation's commands, the tools' scripts and the installed
# package with compilers and cmake, the same on any kernel, and take
# minutes under emulation: install_consumer ran out of its 180 s), from the
# current directory (so this ctest's Testing/ logs stay out of DIR's).
#
#   tools/vm/guest-suite.sh DIR [JOBS [TRIES]]
#
# JOBS (default 1) tests at a time; TRIES (default 3): under emulation a
# test's wall-clock bounds meet a machine several times slower than the one
# they were set on, and a host that may be busy, so a failed test is run
# again, up to TRIES times in all.  A test that fails every time fails the
# run (a kernel difference fails every time); the tests that needed another
# try are named at the end, with each failed try's output above (ctest
# --output-on-failure), so a bound that is too tight is seen, not hidden.
# EDDY_VM_EXCLUDE: a ctest -E regex of tests to leave out as well (say why
# where it is set).
set -uo pipefail

dir=${1:?usage: guest-suite.sh BUILD_DIR [JOBS [TRIES]]}
jobs=${2:-1}
tries=${3:-3}
here=$(pwd -P)
if [ ! -f CTestTestfile.cmake ] || ! grep -qF "subdirs(\"$dir\")" CTestTestfile.cmake; then
    echo "guest-suite.sh: $here/CTestTestfile.cmake must name $dir (tests/kernel.cmake writes it)" >&2
    exit 2
fi
echo "guest-suite: kernel $(uname -r), $(nproc) CPUs; ctest -LE 'compat|kernel|docs|install|browser' -j $jobs, up to $tries tries a test"
start=$SECONDS
exclude=()
[ -z "${EDDY_VM_EXCLUDE:-}" ] || exclude=(-E "$EDDY_VM_EXCLUDE")
[ ${#exclude[@]} -eq 0 ] || echo "guest-suite: also left out (EDDY_VM_EXCLUDE): $EDDY_VM_EXCLUDE"
ctest -LE 'compat|kernel|docs|install|browser' "${exclude[@]}" -j "$jobs" --repeat until-pass:"$tries" \
    --output-on-failure
rc=$?
log=Testing/Temporary/LastTest.log
if [ -f "$log" ]; then
    again=$(awk '/^[0-9]+\/[0-9]+ Test: /{t=$3} /^Test Failed/{f[t]=1} /^Test Passed/{p[t]=1}
                 END{for (t in f) if (p[t]) printf "%s ", t}' "$log")
    [ -z "$again" ] || echo "guest-suite: passed only on another try (bounds too tight for this machine?): $again"
fi
echo "guest-suite: kernel $(uname -r): ctest exited with $rc after $((SECONDS - start)) s"
exit "$rc"
