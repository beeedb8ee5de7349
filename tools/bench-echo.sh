#!/usr/bin/env bash
# bench-echo.sh: eddy-echo against the epoll reference server (echo-epoll).
#
# Builds Release in its own directory (build/bench: never a preset's, whose
# options it would change), starts each server pinned to one CPU and the load
# generator (echo-load) on another, and runs eddy and epoll interleaved
# (A B A B ...) for several rounds at each message size, so drift in the
# machine hits both alike.  For every run it reads the server's utime +
# stime from /proc/PID/stat before and after: CPU per echoed message is the
# honest figure when the load generator, not the server, is the limit.
#
# usage: tools/bench-echo.sh [--build-dir DIR] [--rounds N] [--time S]
#                            [--conns N] [--depth D] [--sizes "64 4096"]
#                            [--server-cpu C] [--load-cpu C] [--json FILE]
#                            [--no-build] [--backend B] [--together]
#   --build-dir DIR  default build/bench, configured here (Release, no
#                    tests); a DIR configured by someone else (a preset's)
#                    is only built, with its own options
#   --backend B      run eddy-echo with EDDY_BACKEND=B (auto, io_uring or
#                    epoll; default: the environment's); the echo-epoll
#                    reference is the same either way
#   --together       run the two at the same time, both on the server CPU,
#                    one echo-load each on the load CPU, instead of one
#                    after the other: each gets about half the CPU, and the
#                    machine's drift within a round (on a shared VM it moves
#                    the CPU per message by +-20% from second to second)
#                    hits both alike, so the per-round ratio is steady to a
#                    few percent.  Absolute figures are then under
#                    contention: compare the ratios.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
own_build="$src/build/bench"
build=$own_build
rounds=3
secs=5
conns=100
depth=1
sizes="64 4096"
server_cpu=1
load_cpu=0
json=""
do_build=1
backend=""
together=0

# The comment at the top, up to the first line of code.
# shellcheck source=tools/bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench/common.sh"
usage() { usage_of "${BASH_SOURCE[0]}"; }
while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --time) secs=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --depth) depth=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --server-cpu) server_cpu=$2; shift 2 ;;
    --load-cpu) load_cpu=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --backend) backend=$2; shift 2 ;;
    --together) together=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-echo: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
build=$(realpath -m "$build")
check_rounds bench-echo "$rounds"

if [ "$do_build" = 1 ]; then
    if [ "$build" = "$own_build" ] || [ ! -f "$build/CMakeCache.txt" ]; then
        cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEDDY_BUILD_TESTS=OFF >/dev/null
    else
        echo "bench-echo: building in $build with its own configuration" \
            "($(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt"))" >&2
    fi
    cmake --build "$build" -j"$(nproc)" --target eddy-echo echo-epoll echo-load >/dev/null
fi
eddy_bin="$build/apps/echo/eddy-echo"
epoll_bin="$build/tools/echo-epoll"
load_bin="$build/tools/echo-load"
for b in "$eddy_bin" "$epoll_bin" "$load_bin"; do
    [ -x "$b" ] || { echo "bench-echo: $b not built" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/bench-echo.XXXXXX)
pids=()
cleanup() {
    # Only the servers this script started, by PID.
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME CMD...: sets SERVER_PID and SERVER_PORT.
start_server() {
    local name=$1; shift
    taskset -c "$server_cpu" "$@" --port 0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
    SERVER_PID=$!
    pids+=("$SERVER_PID")
    # taskset execs the server, so this PID (and its /proc/PID/stat) is it.
    for _ in $(seq 100); do
        if grep -q '^listening on' "$tmp/$name.out" 2>/dev/null; then
            SERVER_PORT=$(awk '/^listening on/ {print $3; exit}' "$tmp/$name.out")
            local comm
            comm=$(<"/proc/$SERVER_PID/comm")
            [ "$comm" = "$(basename "$1" | cut -c1-15)" ] ||
                { echo "bench-echo: PID $SERVER_PID is '$comm', not $1" >&2; exit 1; }
            return 0
        fi
        sleep 0.05
    done
    echo "bench-echo: $name did not start:" >&2
    cat "$tmp/$name.err" >&2
    exit 1
}


if [ -n "$backend" ]; then
    case "$backend" in auto|io_uring|epoll) ;; *) echo "bench-echo: --backend auto|io_uring|epoll" >&2; exit 2 ;; esac
    export EDDY_BACKEND=$backend # the servers inherit it; only eddy-echo reads it
fi
start_server eddy "$eddy_bin"
eddy_pid=$SERVER_PID eddy_port=$SERVER_PORT
start_server epoll "$epoll_bin"
epoll_pid=$SERVER_PID epoll_port=$SERVER_PORT
hz=$(getconf CLK_TCK)

echo "eddy-echo pid $eddy_pid port $eddy_port; echo-epoll pid $epoll_pid port $epoll_port"
echo "servers on CPU $server_cpu, echo-load on CPU $load_cpu; $conns connections, depth $depth, ${secs}s per run, $rounds rounds"
[ "$together" = 1 ] && echo "together: both servers run at once, each with its own echo-load (compare the ratios)"
echo "kernel $(uname -r); $(nproc) CPUs; eddy-echo with EDDY_BACKEND=${EDDY_BACKEND:-(unset: auto)}"
echo

results="$tmp/results"
: >"$results"
# A run is a load started (load_start: the server's CPU ticks before, and
# echo-load in the background) and then finished (load_end: waits, reads
# the ticks after, records one line of results).
# load_start NAME PID PORT SIZE
load_start() {
    local name=$1 pid=$2 port=$3 size=$4
    tick0[$name]=$(cpu_ticks "$pid")
    taskset -c "$load_cpu" "$load_bin" --port "$port" -c "$conns" -d "$depth" \
        -s "$size" -t "$secs" >"$tmp/$name.load" &
    lpid[$name]=$!
}

# load_end NAME PID SIZE ROUND
load_end() {
    local name=$1 pid=$2 size=$3 round=$4
    wait "${lpid[$name]}" || { echo "bench-echo: echo-load against $name failed" >&2; exit 1; }
    local before=${tick0[$name]} after out
    after=$(cpu_ticks "$pid")
    out=$(<"$tmp/$name.load")
    kill -0 "$pid" 2>/dev/null || { echo "bench-echo: $name died" >&2; exit 1; }
    local msgs rate p50 p99 errs lcpu
    msgs=$(sed -n 's/.*msgs=\([0-9]*\) .*/\1/p' <<<"$out")
    rate=$(sed -n 's/.*msgs_per_s=\([0-9.]*\).*/\1/p' <<<"$out")
    p50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$out")
    p99=$(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$out")
    errs=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$out")
    lcpu=$(sed -n 's/.*cpu_s=\([0-9.]*\).*/\1/p' <<<"$out")
    set -- $before; local u0=$1 s0=$2
    set -- $after; local u1=$1 s1=$2
    awk -v n="$name" -v sz="$size" -v r="$round" -v m="$msgs" -v rate="$rate" \
        -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v hz="$hz" -v p50="$p50" -v p99="$p99" \
        -v e="$errs" -v lc="$lcpu" -v t="$secs" 'BEGIN {
        cpu = (du + ds) / hz
        printf "%s %s %s %s %.0f %.4f %.4f %.4f %s %s %s %s %.3f\n", n, sz, r, m, rate,
               cpu * 1e6 / m, du * 1e6 / hz / m, ds * 1e6 / hz / m, p50, p99, e, lc, cpu / t
    }' >>"$results"
    tail -n1 "$results" | awk '{printf "  round %s %-5s %5s B: %9.0f msgs/s  %.3f CPU-us/msg (user %.3f sys %.3f)  server CPU %3.0f%%  p50 %s us p99 %s us  load CPU %ss  errors %s\n", $3, $1, $2, $5, $6, $7, $8, $13*100, $9, $10, $12, $11}'
}

declare -A tick0 lpid
run_eddy_start() { load_start eddy "$eddy_pid" "$eddy_port" "$1"; }
run_epoll_start() { load_start epoll "$epoll_pid" "$epoll_port" "$1"; }
run_eddy_end() { load_end eddy "$eddy_pid" "$1" "$2"; }
run_epoll_end() { load_end epoll "$epoll_pid" "$1" "$2"; }

for size in $sizes; do
    for r in $(seq "$rounds"); do
        if [ "$together" = 1 ]; then
            # Both at once, sharing the server CPU (and the load CPU): what
            # the machine does to one in that round it does to the other.
            run_eddy_start "$size"
            run_epoll_start "$size"
            run_eddy_end "$size" "$r"
            run_epoll_end "$size" "$r"
        elif [ $((r % 2)) = 1 ]; then
            # One after the other, alternating which goes first, so neither
            # always runs on a warm cache.
            run_eddy_start "$size"; run_eddy_end "$size" "$r"
            run_epoll_start "$size"; run_epoll_end "$size" "$r"
        else
            run_epoll_start "$size"; run_epoll_end "$size" "$r"
            run_eddy_start "$size"; run_eddy_end "$size" "$r"
        fi
    done
done

echo
# Summary: medians, spread (min..max) and the eddy/epoll ratios of medians.
awk -v json="$json" -v backend="${EDDY_BACKEND:-}" -v conns="$conns" -v depth="$depth" -v secs="$secs" '
function median(arr, n,   i, j, t, a) {
    for (i = 1; i <= n; i++) a[i] = arr[i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
function mn(arr, n,   i, m) { m = arr[1]; for (i = 2; i <= n; i++) if (arr[i] < m) m = arr[i]; return m }
function mx(arr, n,   i, m) { m = arr[1]; for (i = 2; i <= n; i++) if (arr[i] > m) m = arr[i]; return m }
{
    k = $1 SUBSEP $2
    n[k]++
    rate[k, n[k]] = $5; cpu[k, n[k]] = $6; usr[k, n[k]] = $7; sys[k, n[k]] = $8
    p99[k, n[k]] = $10
    if (!($2 in seen)) { seen[$2] = 1; order[++ns] = $2 }
}
END {
    printf "%-6s %-6s %22s %22s %10s %10s %9s\n", "size", "server", "msgs/s median (min..max)", "CPU-us/msg med (min..max)", "user-us", "sys-us", "p99-us"
    if (json != "") { printf "{\"conns\": %d, \"depth\": %d, \"seconds\": %s, \"sizes\": [", conns, depth, secs > json }
    for (s = 1; s <= ns; s++) {
        sz = order[s]
        for (v = 1; v <= 2; v++) {
            name = v == 1 ? "eddy" : "epoll"; k = name SUBSEP sz; c = n[k]
            delete r; delete u; delete us; delete sy; delete q
            for (i = 1; i <= c; i++) { r[i] = rate[k, i]; u[i] = cpu[k, i]; us[i] = usr[k, i]; sy[i] = sys[k, i]; q[i] = p99[k, i] }
            mr[name] = median(r, c); mu[name] = median(u, c)
            lo_r[name] = mn(r, c); hi_r[name] = mx(r, c); lo_u[name] = mn(u, c); hi_u[name] = mx(u, c)
            mus[name] = median(us, c); msy[name] = median(sy, c); mq[name] = median(q, c)
            printf "%-6s %-6s %9.0f (%.0f..%.0f) %9.3f (%.3f..%.3f) %10.3f %10.3f %9.1f\n", sz, name, mr[name], lo_r[name], hi_r[name], mu[name], lo_u[name], hi_u[name], mus[name], msy[name], mq[name]
        }
        rr = mr["eddy"] / mr["epoll"]; ru = mu["eddy"] / mu["epoll"]
        printf "%-6s ratio  eddy/epoll of medians: msgs/s %.3f   CPU/msg %.3f\n", sz, rr, ru
        # Paired by round (each pair ran back to back): less exposed to drift.
        c = n["eddy" SUBSEP sz] < n["epoll" SUBSEP sz] ? n["eddy" SUBSEP sz] : n["epoll" SUBSEP sz]
        delete pr; delete pu
        for (i = 1; i <= c; i++) {
            pr[i] = rate["eddy" SUBSEP sz, i] / rate["epoll" SUBSEP sz, i]
            pu[i] = cpu["eddy" SUBSEP sz, i] / cpu["epoll" SUBSEP sz, i]
        }
        prm = median(pr, c); pum = median(pu, c)
        printf "%-6s ratio  eddy/epoll per round:  msgs/s %.3f (%.3f..%.3f)   CPU/msg %.3f (%.3f..%.3f)\n", sz, prm, mn(pr, c), mx(pr, c), pum, mn(pu, c), mx(pu, c)
        # The goals at 64 B: on io_uring, beat the readiness design; on
        # epoll, emulate the completion contract on it for almost nothing.
        if (sz == 64 && backend == "epoll")
            printf "goal at 64 B on epoll: CPU/msg <= 1.05x: %s (of medians %.3f, per round %.3f)\n", (ru <= 1.05 && pum <= 1.05 ? "met" : "NOT met"), ru, pum
        else if (sz == 64)
            printf "goal at 64 B: msgs/s >= 1.2x: %s (%.3f); CPU/msg <= 0.8x: %s (%.3f)\n", (rr >= 1.2 ? "met" : "NOT met"), rr, (ru <= 0.8 ? "met" : "NOT met"), ru
        printf "\n"
        if (json != "") {
            printf "%s{\"size\": %s, \"ratio_msgs_per_s\": %.4f, \"ratio_cpu_per_msg\": %.4f, \"paired_ratio_msgs_per_s\": %.4f, \"paired_ratio_cpu_per_msg\": %.4f", (s > 1 ? ", " : ""), sz, rr, ru, prm, pum > json
            for (v = 1; v <= 2; v++) {
                name = v == 1 ? "eddy" : "epoll"
                printf ", \"%s\": {\"msgs_per_s_median\": %.0f, \"msgs_per_s_min\": %.0f, \"msgs_per_s_max\": %.0f, \"cpu_us_per_msg_median\": %.4f, \"cpu_us_per_msg_min\": %.4f, \"cpu_us_per_msg_max\": %.4f, \"user_us_per_msg\": %.4f, \"sys_us_per_msg\": %.4f, \"p99_us_median\": %.1f}", name, mr[name], lo_r[name], hi_r[name], mu[name], lo_u[name], hi_u[name], mus[name], msy[name], mq[name] > json
            }
            printf "}" > json
        }
    }
    if (json != "") printf "]}\n" > json
}' "$results"
