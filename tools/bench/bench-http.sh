#!/usr/bin/env bash
# bench-http.sh: eddy-demo GET /plaintext against nginx (one process, access
# log off) and the no-parse io_uring responder (bench-limit, the "limit"),
# optionally Node.js and Tornado.
#
# Installs wrk and nginx if missing (tools/setup.sh --bench), builds
# Release in its own directory (build/bench: never a preset's, whose
# options it would change; a --build-dir configured by someone else is
# only built, with its own options), pins every server to one CPU and
# wrk -t1 to another, and runs the servers interleaved (A B C A B C ...,
# the order rotating every round) in each scenario: keep-alive at 100 and 1,000 connections, pipelined x16,
# Connection: close (and, as closedefer, Connection: close with every
# server's listener in TCP_DEFER_ACCEPT mode: eddy --defer-accept 1, nginx
# "listen ... deferred", bench-limit --defer-accept 1; Node.js and Tornado
# sit that one out), and the echo benchmark of the runtime (echo:
# tools/bench-echo.sh, eddy-echo against an epoll echo server, 64 B and
# 4 KiB messages, 100 connections, same rounds and run time), and fiber:
# eddy's /plaintext from its callback handler against /plaintext-fiber (the
# same answer from a fiber per request, eddy_http_route_fiber), keep-alive
# at 100 connections and pipelined x16, interleaved on one eddy instance;
# the goal is a fiber request at most 1.15x the server CPU of a callback
# one (keep-alive; the pipelined ratio is shown too).  Server CPU
# comes from /proc/PID/stat (utime + stime) before and after each run.  Idle memory: RSS growth of a freshly started
# server while bench-idle-conns holds N keep-alive connections (with and
# without one request each).  Prints one table (medians, min..max, ratios
# to nginx) and the goals met / not met.
#
# usage: tools/bench/bench-http.sh [--build-dir DIR] [--rounds N] [--time S]
#            [--quick] [--idle-conns N]
#            [--scenarios "idle ka100 ka1000 pipe16 close closedefer echo fiber"]
#            [--node] [--tornado] [--limit-direct] [--epoll] [--baseline DIR]
#            [--server-cpu C] [--load-cpu C]
#            [--json FILE] [--md FILE] [--keep-raw DIR] [--no-build] [--no-setup]
#            [--dry-run]
#   --build-dir DIR  default build/bench, configured here (Release, no
#               tests); a DIR configured by someone else (a preset's) is
#               only built, with its own options
#   --quick     3 s runs, 1 round, 2,000 idle connections (smoke test only)
#   --node      add a Node.js row (if node is installed)
#   --tornado   add a Tornado row (if python3 can import tornado)
#   --epoll     add an "eddy-epoll" row: the same eddy-demo on the epoll
#               backend (EDDY_BACKEND=epoll), with the same goals against nginx
#   --baseline DIR  add an "eddy-base" row: DIR/apps/demo/eddy-demo (another
#               build, e.g. of the commit before a change: an A/B in one run)
#   --limit-direct  add a "limitd" row: bench-limit with registered (direct)
#               descriptors for its connections
#   --dry-run   check the options, print what would run, and stop (nothing
#               is installed, built or started)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
own_build="$src/build/bench"
build=$own_build
rounds=3
secs=10
idle_n=10000
scenarios="idle ka100 ka1000 pipe16 close closedefer echo"
server_cpu=1
load_cpu=0
json=""
md=""
keep_raw=""
do_build=1
do_setup=1
want_node=0
want_tornado=0
want_limitd=0
want_epoll=0
baseline=""
dry_run=0

# The comment at the top, up to the first line of code.
# shellcheck source=tools/bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
usage() { usage_of "${BASH_SOURCE[0]}"; }
while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --time) secs=$2; shift 2 ;;
    --quick) secs=3; rounds=1; idle_n=2000; shift ;;
    --idle-conns) idle_n=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --node) want_node=1; shift ;;
    --tornado) want_tornado=1; shift ;;
    --limit-direct) want_limitd=1; shift ;;
    --epoll) want_epoll=1; shift ;;
    --baseline) baseline=$2; shift 2 ;;
    --server-cpu) server_cpu=$2; shift 2 ;;
    --load-cpu) load_cpu=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --md) md=$2; shift 2 ;;
    --keep-raw) keep_raw=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --no-setup) do_setup=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-http: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
build=$(realpath -m "$build")
check_rounds bench-http "$rounds"
for s in $scenarios; do
    case $s in ka100|ka1000|pipe16|close|closedefer|idle|echo|fiber) ;; *) echo "bench-http: unknown scenario $s" >&2; exit 2 ;; esac
done
if [ "$dry_run" = 1 ]; then
    echo "bench-http: dry run: scenarios \"$scenarios\", $rounds round(s) of $secs s," \
        "$idle_n idle connections; servers on CPU $server_cpu, wrk on CPU $load_cpu"
    if [ "$do_build" = 1 ]; then
        echo "bench-http: would build in $build"
    else
        echo "bench-http: would use the binaries in $build (--no-build)"
        for b in apps/demo/eddy-demo tools/bench/bench-limit tools/bench/bench-idle-conns \
            apps/echo/eddy-echo tools/echo-epoll tools/echo-load; do
            [ -x "$build/$b" ] || { echo "bench-http: $build/$b not built" >&2; exit 1; }
        done
    fi
    echo "bench-http: extra rows:$([ "$want_epoll" = 1 ] && echo " eddy-epoll")$([ -n "$baseline" ] && echo " eddy-base")$([ "$want_limitd" = 1 ] && echo " limitd")$([ "$want_node" = 1 ] && echo " node")$([ "$want_tornado" = 1 ] && echo " tornado")"
    [ -z "$json$md$keep_raw" ] || echo "bench-http: would write:${json:+ $json}${md:+ $md}${keep_raw:+ $keep_raw/}"
    exit 0
fi

if [ "$do_setup" = 1 ] && ! { command -v wrk && command -v nginx; } >/dev/null 2>&1; then
    "$src/tools/setup.sh" --bench
fi
export PATH="$PATH:/usr/sbin:/sbin" # nginx lives in sbin
for t in wrk nginx taskset python3 curl; do
    command -v "$t" >/dev/null || { echo "bench-http: $t not found (tools/setup.sh --bench)" >&2; exit 1; }
done

if [ "$do_build" = 1 ]; then
    if [ "$build" = "$own_build" ] || [ ! -f "$build/CMakeCache.txt" ]; then
        cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEDDY_BUILD_TESTS=OFF >/dev/null
    else
        echo "bench-http: building in $build with its own configuration" \
            "($(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt"))" >&2
    fi
    cmake --build "$build" -j"$(nproc)" --target eddy-demo bench-limit bench-idle-conns \
        eddy-echo echo-epoll echo-load >/dev/null
fi
eddy_bin="$build/apps/demo/eddy-demo"
limit_bin="$build/tools/bench/bench-limit"
idle_bin="$build/tools/bench/bench-idle-conns"
for b in "$eddy_bin" "$limit_bin" "$idle_bin"; do
    [ -x "$b" ] || { echo "bench-http: $b not built" >&2; exit 1; }
done

servers="eddy nginx limit"
[ "$want_epoll" = 1 ] && servers="$servers eddy-epoll"
if [ -n "$baseline" ]; then
    base_bin="$(realpath -m "$baseline")/apps/demo/eddy-demo"
    [ -x "$base_bin" ] || { echo "bench-http: --baseline: $base_bin not built" >&2; exit 1; }
    servers="$servers eddy-base"
fi
[ "$want_limitd" = 1 ] && servers="$servers limitd"
if [ "$want_node" = 1 ]; then
    if command -v node >/dev/null; then servers="$servers node"
    else echo "bench-http: --node: node not installed, no Node.js row" >&2; fi
fi
if [ "$want_tornado" = 1 ]; then
    if python3 -c 'import tornado' 2>/dev/null; then servers="$servers tornado"
    else echo "bench-http: --tornado: python3 cannot import tornado, no Tornado row" >&2; fi
fi

# 1,000 client connections and 10,000 idle ones need more than 1024
# descriptors; the servers and the tools inherit this.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((idle_n + 100)) ]; then
    echo "bench-http: descriptor limit $(ulimit -n) is too low for $idle_n idle connections" >&2
    exit 1
fi

tmp=$(mktemp -d /tmp/bench-http.XXXXXX)
raw="$tmp/raw"
mkdir -p "$raw"
pids=()
cleanup() {
    local p
    # Only what this script started, by PID; nginx included (it is ours).
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ -n "$keep_raw" ] && [ -d "$raw" ]; then
        # The servers' own messages too (eddy's stall watchdog writes there).
        for d in "$tmp"/*.*/; do
            [ -d "$d" ] && cat "$d"err "$d"error.log 2>/dev/null >"$raw/log.$(basename "$d")" || true
        done
        mkdir -p "$keep_raw" && cp -r "$raw"/. "$keep_raw"/
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server KIND: starts a fresh server pinned to the server CPU and
# sets SERVER_PID, SERVER_PORT and CLOSE_PORT (the limit answers
# Connection: close on a port of its own; the others on the same port).
nstarted=0
start_server() { # start_server KIND [defer]
    local kind=$1 defer=${2:-} dir="$tmp/$1.$nstarted" comm eflags=() lflags=()
    [ -n "$defer" ] && eflags=(--defer-accept 1) lflags=(--defer-accept 1)
    nstarted=$((nstarted + 1))
    mkdir -p "$dir"
    SERVER_PORT="" CLOSE_PORT=""
    case $kind in
    eddy|eddy-epoll|eddy-base)
        local bin=$eddy_bin env=()
        [ "$kind" = eddy-epoll ] && env=(env EDDY_BACKEND=epoll)
        [ "$kind" = eddy-base ] && bin=$base_bin
        SERVER_PORT=$(free_port)
        "${env[@]}" taskset -c "$server_cpu" "$bin" --host 127.0.0.1 --port "$SERVER_PORT" \
            --time-port "$(free_port)" "${eflags[@]}" >"$dir/out" 2>"$dir/err" &
        comm=eddy-demo ;;
    nginx)
        SERVER_PORT=$(free_port)
        sed "s#@DIR@#$dir#g; s#@PORT@#$SERVER_PORT#g" "$here/nginx.conf" >"$dir/nginx.conf"
        [ -n "$defer" ] && sed -i 's#backlog=4096;#backlog=4096 deferred;#' "$dir/nginx.conf"
        if ! nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>/dev/null; then
            # Builds without the uwsgi/scgi modules reject their temp paths.
            sed -i '/@OPTIONAL@/d' "$dir/nginx.conf"
        fi
        taskset -c "$server_cpu" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
            >"$dir/out" 2>"$dir/err" &
        comm=nginx ;;
    limit|limitd)
        [ "$kind" = limitd ] && lflags+=(--direct 1)
        taskset -c "$server_cpu" "$limit_bin" --port 0 --close-port 0 "${lflags[@]}" >"$dir/out" 2>"$dir/err" &
        comm=bench-limit ;;
    node)
        taskset -c "$server_cpu" node "$here/node-server.js" 0 >"$dir/out" 2>"$dir/err" &
        comm=node ;;
    tornado)
        taskset -c "$server_cpu" python3 "$here/tornado-server.py" 0 >"$dir/out" 2>"$dir/err" &
        comm="" ;;
    esac
    SERVER_PID=$!
    pids+=("$SERVER_PID")
    for _ in $(seq 200); do
        if [ -z "$SERVER_PORT" ] && grep -q '^listening on' "$dir/out" 2>/dev/null; then
            SERVER_PORT=$(awk '/^listening on/ {print $3; exit}' "$dir/out")
            CLOSE_PORT=$(awk '/^listening on/ && $4 == "close" {print $5; exit}' "$dir/out")
        fi
        if [ -n "$SERVER_PORT" ] &&
            curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$SERVER_PORT/plaintext" 2>/dev/null; then
            # taskset execs the server, so this PID (and its /proc/PID/stat) is it.
            if [ -n "$comm" ] && [ "$(cat "/proc/$SERVER_PID/comm")" != "$comm" ]; then
                echo "bench-http: PID $SERVER_PID is '$(cat "/proc/$SERVER_PID/comm")', not $comm" >&2
                exit 1
            fi
            CLOSE_PORT=${CLOSE_PORT:-$SERVER_PORT}
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench-http: $kind did not start:" >&2
    cat "$dir/out" "$dir/err" "$dir/error.log" 2>/dev/null >&2
    exit 1
}

# Once reaped, a PID may be reused by someone else's process: drop it.
forget() {
    local p keep=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

stop_server() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}

# busy, total and softirq ticks of one CPU from /proc/stat.  Softirq work
# (loopback delivery runs in the sender's context) is accounted there, not
# to the process, whenever the kernel has IRQ time accounting.
cpu_busy() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t, $8 }' /proc/stat
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
rss_anon_kb() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }
nfds() { ls "/proc/$1/fd" | wc -l; }

rotate() { # rotate N WORDS...: the words, starting at the N-th (mod count)
    local n=$1; shift
    local a=("$@") i
    for i in $(seq 0 $(($# - 1))); do echo -n "${a[$(((i + n) % $#))]} "; done
}

{
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "cpus=$(nproc)"
    echo "kernel=$(uname -r)"
    echo "mem_gib=$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
    echo "hz=$(getconf CLK_TCK)"
    echo "secs=$secs"
    echo "rounds=$rounds"
    echo "idle_n=$idle_n"
    echo "server_cpu=$server_cpu"
    echo "load_cpu=$load_cpu"
    echo "servers=$servers"
    echo "nginx=$(nginx -v 2>&1 | sed 's/.*version: //')"
    echo "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
    echo "node=$(command -v node >/dev/null && node --version || echo none)"
    echo "eddy=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$src" status --porcelain 2>/dev/null | grep -q . && echo +dirty || true)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$raw/meta"

echo "servers: $servers; server CPU $server_cpu, wrk -t1 on CPU $load_cpu; ${secs}s runs, $rounds rounds"
echo "kernel $(uname -r); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# --- idle memory: a fresh server per measurement, so the growth is the
# connections' and not what earlier load left in the allocator.
idle_one() { # idle_one MODE KIND ROUND
    local mode=$1 kind=$2 round=$3 spid req=() out="$tmp/idle.out" ipid r0 r1 a0 a1 f0 f1 closed
    start_server "$kind"
    spid=$SERVER_PID
    [ "$mode" = req ] && req=(--request /plaintext)
    # Warm-up: one second of load, so that pools a server fills once (eddy's
    # and the limit's 4 MiB of receive buffers are only touched as the
    # kernel cycles through them) count as the server's, not as the idle
    # connections'.
    taskset -c "$load_cpu" wrk -t1 -c100 -d1s "http://127.0.0.1:$SERVER_PORT/plaintext" >/dev/null
    sleep 0.5
    r0=$(rss_kb "$spid") a0=$(rss_anon_kb "$spid") f0=$(nfds "$spid")
    : >"$out"
    "$idle_bin" --port "$SERVER_PORT" -n "$idle_n" "${req[@]}" --hold 120 >"$out" &
    ipid=$!
    pids+=("$ipid")
    for _ in $(seq 1200); do
        grep -q '^ready' "$out" && break
        kill -0 "$ipid" 2>/dev/null || { echo "bench-http: bench-idle-conns failed against $kind" >&2; exit 1; }
        sleep 0.05
    done
    grep -q '^ready' "$out" || { echo "bench-http: $kind: idle connections not ready in 60 s" >&2; exit 1; }
    sleep 1 # let the server finish its side of the last accepts
    r1=$(rss_kb "$spid") a1=$(rss_anon_kb "$spid") f1=$(nfds "$spid")
    kill -TERM "$ipid"
    wait "$ipid" || true
    forget "$ipid"
    closed=$(awk '/^closed_by_server/ {print $2}' "$out")
    stop_server "$spid"
    printf 'idle\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$kind" "$round" "$idle_n" \
        "$r0" "$r1" "$a0" "$a1" "$((f1 - f0))" "${closed:-?}" >>"$raw/idle.tsv"
    awk -v m="$mode" -v k="$kind" -v r="$round" -v n="$idle_n" -v r0="$r0" -v r1="$r1" \
        -v f="$((f1 - f0))" -v c="${closed:-?}" 'BEGIN {
        printf "  idle %-4s round %s %-7s RSS %6d -> %6d kB: %6.0f B/conn  (server fds +%d, closed by server %s)\n",
               m, r, k, r0, r1, (r1 - r0) * 1024 / n, f, c }'
}

if [[ " $scenarios " == *" idle "* ]]; then
    echo "idle memory: $idle_n connections"
    for r in $(seq "$rounds"); do
        for mode in req bare; do
            for kind in $(rotate "$r" $servers); do idle_one "$mode" "$kind" "$r"; done
        done
    done
    echo
fi

# --- load: one long-lived instance of each server for all runs.
declare -A spid sport scport
for kind in $servers; do
    start_server "$kind"
    spid[$kind]=$SERVER_PID sport[$kind]=$SERVER_PORT scport[$kind]=$CLOSE_PORT
done
# closedefer: a second instance of each (but Node.js, Tornado), deferring.
declare -A dpid dport
defer_servers=""
if [[ " $scenarios " == *" closedefer "* ]]; then
    for kind in $servers; do
        case $kind in node|tornado) continue ;; esac
        start_server "$kind" defer
        dpid[$kind]=$SERVER_PID dport[$kind]=$CLOSE_PORT
        defer_servers="$defer_servers $kind"
    done
fi
hz=$(getconf CLK_TCK)

run_one() { # run_one SCENARIO KIND ROUND
    local scen=$1 kind=$2 round=$3 pid=${spid[$2]} port=${sport[$2]} conns=100 extra=() args=()
    case $scen in
    ka1000) conns=1000 ;;
    pipe16) extra=(-s "$here/pipeline.lua"); args=(-- 16) ;;
    close) port=${scport[$kind]}; extra=(-H "Connection: close") ;;
    closedefer) pid=${dpid[$kind]} port=${dport[$kind]}; extra=(-H "Connection: close") ;;
    esac
    local wout="$raw/$scen.$kind.$round.wrk" before after c1a c1b c0a c0b wpid
    before=$(cpu_ticks "$pid") c1a=$(cpu_busy "$server_cpu") c0a=$(cpu_busy "$load_cpu")
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" --latency "${extra[@]}" \
        "http://127.0.0.1:$port/plaintext" "${args[@]}" >"$wout" 2>&1 &
    wpid=$!
    pids+=("$wpid")
    wait "$wpid" || { echo "bench-http: wrk failed:" >&2; cat "$wout" >&2; exit 1; }
    forget "$wpid"
    after=$(cpu_ticks "$pid") c1b=$(cpu_busy "$server_cpu") c0b=$(cpu_busy "$load_cpu")
    kill -0 "$pid" 2>/dev/null || { echo "bench-http: $kind died" >&2; exit 1; }
    set -- $before $after $c1a $c1b $c0a $c0b
    # $1..$4 utime stime before, after; $5..$10 server CPU busy total softirq
    # before, after; $11..$16 the same for the load CPU.
    printf 'run\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$kind" "$round" "$secs" \
        $(($3 - $1)) $(($4 - $2)) $(($8 - $5)) $(($9 - $6)) $((${14} - ${11})) $((${15} - ${12})) \
        "$(basename "$wout")" $((${10} - $7)) >>"$raw/runs.tsv"
    awk -v s="$scen" -v k="$kind" -v r="$round" -v du=$(($3 - $1)) -v ds=$(($4 - $2)) \
        -v hz="$hz" -v t="$secs" -f /dev/stdin "$wout" <<'EOF'
/ requests in / { n = $1 }
/^Requests\/sec:/ { rps = $2 }
/^ +99%/ { p99 = $2 }
/Socket errors|Non-2xx/ { err = err " [" $0 "]" }
END {
    cpu = (du + ds) / hz
    printf "  %-6s round %s %-7s %9.0f req/s  %7.1f CPU-ms/100k (user %2.0f%%)  server CPU %3.0f%%  p99 %s%s\n",
           s, r, k, rps, n ? cpu * 1e8 / n : 0, du + ds ? 100 * du / (du + ds) : 0, 100 * cpu / t, p99, err
}
EOF
}

# --- fiber: the same eddy instance answers /plaintext from its callback
# handler and /plaintext-fiber from a fiber per request; CPU per request of
# each, the two paths interleaved (order rotating every round).
fiber_one() { # fiber_one MODE PATH ROUND
    local mode=$1 path=$2 round=$3 pid=${spid[eddy]} port=${sport[eddy]} extra=() args=()
    [ "$mode" = pipe16 ] && extra=(-s "$here/pipeline.lua") && args=(-- 16)
    local wout="$raw/fiber.$mode.${path#/}.$round.wrk" before after wpid n
    before=$(cpu_ticks "$pid")
    taskset -c "$load_cpu" wrk -t1 -c100 -d"${secs}s" --latency "${extra[@]}" \
        "http://127.0.0.1:$port$path" "${args[@]}" >"$wout" 2>&1 &
    wpid=$!
    pids+=("$wpid")
    wait "$wpid" || { echo "bench-http: wrk failed:" >&2; cat "$wout" >&2; exit 1; }
    forget "$wpid"
    after=$(cpu_ticks "$pid")
    kill -0 "$pid" 2>/dev/null || { echo "bench-http: eddy died" >&2; exit 1; }
    if grep -q 'Non-2xx\|Socket errors' "$wout"; then
        echo "bench-http: $path answered with errors:" >&2; cat "$wout" >&2; exit 1
    fi
    n=$(awk '/ requests in / {print $1}' "$wout")
    set -- $before $after
    printf 'fiber\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$path" "$round" $(($3 + $4 - $1 - $2)) "$n" \
        >>"$raw/fiber.tsv"
    awk -v m="$mode" -v p="$path" -v r="$round" -v t=$(($3 + $4 - $1 - $2)) -v n="$n" \
        -v hz="$hz" -v s="$secs" 'BEGIN {
        printf "  %-6s round %s %-16s %9.0f req/s  %6.2f CPU-us/req\n", m, r, p, n / s, t * 1e6 / hz / n }'
}

# Medians per mode and path, the ratio fiber/callback, and the goal.
fiber_summary() {
    awk -v hz="$hz" -F'\t' '
    function median(k,   a, i, j, t, c) {
        c = split(vals[k], a, " ")
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
    }
    { us = $5 * 1e6 / hz / $6; vals[$2 " " $3] = vals[$2 " " $3] " " us; modes[$2] = 1
      per[$2 " " $4 " " $3] = us; rounds[$4] = 1 }
    END {
        for (m in modes) {
            cb = median(m " /plaintext"); fb = median(m " /plaintext-fiber")
            lo = 1e9; hi = 0 # the ratio of each round (a callback run and its neighbouring fiber run)
            for (r in rounds) {
                x = per[m " " r " /plaintext-fiber"] / per[m " " r " /plaintext"]
                if (x < lo) lo = x; if (x > hi) hi = x
            }
            goal = m == "ka100" ? (fb / cb <= 1.15 ? "  goal <= 1.15x: met" : "  goal <= 1.15x: NOT met") : ""
            printf "  %-6s median CPU-us/req: callback %.2f  fiber %.2f  ratio %.3fx (rounds %.2f..%.2f)%s\n",
                   m, cb, fb, fb / cb, lo, hi, goal
        }
    }' "$raw/fiber.tsv"
}

for scen in $scenarios; do
    [ "$scen" = idle ] || [ "$scen" = echo ] && continue
    if [ "$scen" = fiber ]; then
        echo "fiber (eddy /plaintext: callback handler vs fiber handler):"
        for r in $(seq "$rounds"); do
            for mode in ka100 pipe16; do
                for path in $(rotate "$r" /plaintext /plaintext-fiber); do fiber_one "$mode" "$path" "$r"; done
            done
        done
        fiber_summary | tee "$raw/fiber.summary"
        continue
    fi
    echo "$scen:"
    who=$servers
    [ "$scen" = closedefer ] && who=$defer_servers
    for r in $(seq "$rounds"); do
        # Rotate who goes first, so nobody always runs right after the same neighbour.
        for kind in $(rotate "$r" $who); do run_one "$scen" "$kind" "$r"; done
    done
done
if [[ " $scenarios " == *" echo "* ]]; then
    echo "echo (tools/bench-echo.sh):"
    "$src/tools/bench-echo.sh" --build-dir "$build" --no-build --rounds "$rounds" --time "$secs" \
        --server-cpu "$server_cpu" --load-cpu "$load_cpu" --json "$raw/echo.json" | tee "$raw/echo.out"
fi
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw/meta"
echo

report=(python3 "$here/report.py" "$raw")
[ -n "$json" ] && report+=(--json "$json")
[ -n "$md" ] && report+=(--md "$md")
# The fiber scenario alone has its summary above; report.py's table and
# goals are about the other scenarios.
[ "$(echo $scenarios)" = fiber ] && [ -z "$json$md" ] && exit 0
"${report[@]}"
