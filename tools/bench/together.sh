#!/usr/bin/env bash
# together.sh: eddy-demo's GET /plaintext against nginx, or against another
# build of eddy-demo, measured *together*: both servers pinned to the same
# CPU at the same time, one `wrk -t1` each on the load CPU, so that both
# see the same machine in every round (run one after the other, this VM's
# spread from run to run is wider than the differences being measured; see
# docs/performance.md).  Prints, per round and as medians, server CPU per
# 100k requests of each (utime + stime from /proc/PID/stat) and the ratio
# A/B.  --mode close sends `Connection: close`, --mode ka keeps connections
# alive, --mode pipe pipelines 16 requests (pipeline.lua).  --against PATH
# runs that eddy-demo (same backend) as B instead of nginx: an A/B of two
# commits.  Run tools/bench/bench-http.sh once first:
# it installs wrk and nginx and builds the Release eddy-demo this uses
# (build/bench).
#
# usage: tools/bench/together.sh [--mode close|ka|pipe] [--backend epoll|io_uring]
#            [--rounds N] [--time S] [--conns C] [--bin PATH/eddy-demo]
#            [--against nginx|PATH/eddy-demo]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
backend=epoll rounds=12 secs=4 conns=50 bin=$root/build/bench/apps/demo/eddy-demo
mode=close against=nginx
while [ $# -gt 0 ]; do
    case $1 in
    --mode) mode=$2; shift 2 ;;
    --against) against=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --time) secs=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
    esac
done
export PATH="$PATH:/usr/sbin:/sbin"
for t in wrk nginx taskset python3 curl; do
    command -v "$t" >/dev/null || { echo "together: $t missing (run tools/bench/bench-http.sh once)" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "together: no $bin (run tools/bench/bench-http.sh once)" >&2; exit 1; }
post=()
case $mode in
close) hdr=(-H "Connection: close") ;;
ka) hdr=() ;;
pipe) hdr=(-s "$here/pipeline.lua") post=(-- 16) ;;
*) echo "together: --mode is close, ka or pipe" >&2; exit 2 ;;
esac
[ "$against" = nginx ] || [ -x "$against" ] ||
    { echo "together: --against: no $against" >&2; exit 1; }
server_cpu=$(($(nproc) - 1)) load_cpu=0
tmp=$(mktemp -d)
pids=()
cleanup() {
    # Only what this script started, by PID.
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ready() {
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$1/plaintext" && return 0
        sleep 0.05
    done
    echo "together: server on port $1 did not answer" >&2
    exit 1
}

start_eddy() { # BIN PORT OUT
    EDDY_BACKEND=$backend taskset -c "$server_cpu" "$1" --host 127.0.0.1 --port "$2" \
        --time-port "$(free_port)" >"$3.out" 2>"$3.err" &
    pids+=("$!")
}
eport=$(free_port)
start_eddy "$bin" "$eport" "$tmp/eddy"
epid=${pids[-1]}
nport=$(free_port)
if [ "$against" = nginx ]; then
    bname=nginx
    mkdir -p "$tmp/nginx"
    sed "s#@DIR@#$tmp/nginx#g; s#@PORT@#$nport#g" "$here/nginx.conf" >"$tmp/nginx/nginx.conf"
    nginx -t -q -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" 2>/dev/null ||
        sed -i '/@OPTIONAL@/d' "$tmp/nginx/nginx.conf"
    taskset -c "$server_cpu" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
        -e "$tmp/nginx/error.log" >"$tmp/nginx.out" 2>&1 &
    pids+=("$!")
else
    bname=base
    start_eddy "$against" "$nport" "$tmp/base"
fi
npid=${pids[-1]}
ready "$eport"
ready "$nport"

echo "eddy-demo ($backend) and $bname${against:+ ($against)} together on CPU $server_cpu, one wrk -t1 -c$conns each on CPU $load_cpu, mode $mode, $rounds x ${secs}s"
: >"$tmp/rounds"
for r in $(seq 1 "$rounds"); do
    e0=$(ticks "$epid") n0=$(ticks "$npid")
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" ${hdr[@]+"${hdr[@]}"} \
        "http://127.0.0.1:$eport/plaintext" ${post[@]+"${post[@]}"} >"$tmp/we" 2>&1 &
    we=$!
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" ${hdr[@]+"${hdr[@]}"} \
        "http://127.0.0.1:$nport/plaintext" ${post[@]+"${post[@]}"} >"$tmp/wn" 2>&1 &
    wn=$!
    wait "$we" "$wn"
    e1=$(ticks "$epid") n1=$(ticks "$npid")
    er=$(awk '/requests in/{print $1}' "$tmp/we") nr=$(awk '/requests in/{print $1}' "$tmp/wn")
    echo "$r $((e1 - e0)) $er $((n1 - n0)) $nr" >>"$tmp/rounds"
done
python3 - "$tmp/rounds" "$(getconf CLK_TCK)" "$bname" <<'EOF'
import math, statistics, sys
hz, b = int(sys.argv[2]), sys.argv[3]
rows = [list(map(int, l.split())) for l in open(sys.argv[1])]
ratios, ecpu, ncpu = [], [], []
for r, et, er, nt, nr in rows:
    e = et * 1000 / hz / er * 1e5
    n = nt * 1000 / hz / nr * 1e5
    ecpu.append(e); ncpu.append(n); ratios.append(e / n)
    print(f"round {r:2}: eddy {e:8.1f} CPU-ms/100k ({er} req)  {b} {n:8.1f} ({nr} req)  ratio {e / n:.3f}")
gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
print(f"eddy {statistics.median(ecpu):.1f}, {b} {statistics.median(ncpu):.1f} CPU-ms/100k (medians): "
      f"{statistics.median(ecpu) / statistics.median(ncpu):.3f}x of medians; per round median "
      f"{statistics.median(ratios):.3f}, geometric mean {gm:.3f}, {min(ratios):.3f}..{max(ratios):.3f}")
EOF
