# Shared by the benchmark scripts (tools/bench-echo.sh, tools/bench/bench-http.sh):
# sourced, not run.

# usage SCRIPT: the comment at the top of SCRIPT, up to the first line of code.
usage_of() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$1"; }

# check_rounds NAME ROUNDS: at least one round; a warning under three.
check_rounds() {
    [ "$2" -ge 1 ] || { echo "$1: --rounds must be >= 1" >&2; exit 2; }
    [ "$2" -ge 3 ] || echo "$1: warning: fewer than 3 rounds; medians mean little" >&2
}

# cpu_ticks PID: utime stime of a process in clock ticks (fields 14, 15 of
# /proc/PID/stat; the name in parentheses may hold spaces, so count from
# after the closing one).
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split on purpose
    set -- $stat
    echo "${12} ${13}"
}
