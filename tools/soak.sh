#!/usr/bin/env bash
# Soak: at least 1,000,000 requests over at least 10,000 connection churns
# against eddy-demo's /plaintext, with wrk, sampling the server's RSS and
# descriptor count; prints warm-up versus end figures and fails when either
# grew after warm-up.  Not a ctest test (it takes a minute or two).
#   tools/soak.sh [path/to/eddy-demo]
#   REQUESTS=1000000 CHURNS=10000 SAMPLE_S=1 RSS_SLACK_KB=2048 tools/soak.sh
# Phases alternate: churn (wrk -H 'Connection: close': one request per
# connection) and keep-alive (wrk -c 64).  The first phase is the warm-up;
# the run goes on until REQUESTS and CHURNS are reached (and at least
# MIN_PHASES phases ran, default 0), and fails unless at least two phases
# were measured after the warm-up: with fewer, the warm-up and the end are
# the same sample or neighbours, and there is nothing to compare.  A short
# smoke run: REQUESTS=1 CHURNS=1 MIN_PHASES=3 CHURN_S=1 KEEP_S=1.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=${1:-}
if [ -z "$demo" ]; then
    for b in build/release build/default build; do
        if [ -x "$root/$b/apps/demo/eddy-demo" ]; then demo=$root/$b/apps/demo/eddy-demo; break; fi
    done
fi
[ -n "$demo" ] && [ -x "$demo" ] || { echo "soak: no eddy-demo (build it, or pass its path)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "soak: wrk is missing (tools/setup.sh --bench)" >&2; exit 2; }

REQUESTS=${REQUESTS:-1000000}
CHURNS=${CHURNS:-10000}
SAMPLE_S=${SAMPLE_S:-1}
RSS_SLACK_KB=${RSS_SLACK_KB:-2048}  # allowed RSS growth after warm-up
CHURN_S=${CHURN_S:-1}
KEEP_S=${KEEP_S:-2}
MIN_PHASES=${MIN_PHASES:-0}

tmp=$(mktemp -d)
out=$tmp/demo.out
samples=$tmp/samples
demo_pid=
sampler_pid=
cleanup() {
    [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
    [ -n "$demo_pid" ] && kill -9 "$demo_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

"$demo" --port 0 --time-port 0 --host 127.0.0.1 >"$out" 2>&1 &
demo_pid=$!
port=
for _ in $(seq 100); do
    port=$(grep -o '127\.0\.0\.1:[0-9]*' "$out" | head -1 | cut -d: -f2 || true)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { echo "soak: eddy-demo did not start:" >&2; cat "$out" >&2; exit 1; }
url=http://127.0.0.1:$port/plaintext

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$demo_pid/status"; }
fds() { find "/proc/$demo_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }

start=$(date +%s.%N)
( while kill -0 "$demo_pid" 2>/dev/null; do
      printf '%.1f %s %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$(rss_kb)" "$(fds)"
      sleep "$SAMPLE_S"
  done ) >"$samples" 2>/dev/null &
sampler_pid=$!

# wrk's "N requests in ..." line, and its error counts (must stay zero).
run_wrk() {
    local log=$tmp/wrk.log
    wrk "$@" "$url" >"$log" 2>&1 || { cat "$log" >&2; return 1; }
    local n
    n=$(awk '/requests in/ {print $1}' "$log")
    if grep -qE 'Socket errors|Non-2xx' "$log"; then
        # A close-per-request run ends every connection at the server's
        # side; wrk counts only real errors (connect/read/write/timeout).
        local e
        e=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$log")
        local bad
        bad=$(awk '/Non-2xx/ {print $NF}' "$log")
        if [ "${e:-0}" != 0 ] || [ -n "$bad" ]; then
            echo "soak: wrk reported errors:" >&2
            cat "$log" >&2
            echo $((${e:-0} + ${bad:-0})) >>"$tmp/errors"
        fi
    fi
    echo "$n"
}

total=0 churns=0 phase=0
warm_rss='' warm_fds='' warm_at=''
printf '%6s %10s %8s %9s %5s\n' phase requests churns rss_kB fds
while [ "$total" -lt "$REQUESTS" ] || [ "$churns" -lt "$CHURNS" ] || [ "$phase" -lt "$MIN_PHASES" ]; do
    phase=$((phase + 1))
    if [ "$churns" -lt "$CHURNS" ] || [ $((phase % 2)) -eq 1 ]; then
        n=$(run_wrk -t2 -c16 -d"${CHURN_S}s" -H 'Connection: close')
        churns=$((churns + n))
        total=$((total + n))
    fi
    n=$(run_wrk -t2 -c64 -d"${KEEP_S}s")
    total=$((total + n))
    sleep 0.3 # let the server close what wrk left
    r=$(rss_kb) f=$(fds)
    printf '%6d %10d %8d %9d %5d\n' "$phase" "$total" "$churns" "$r" "$f"
    if [ -z "$warm_rss" ]; then
        warm_rss=$r warm_fds=$f warm_at=$total
    fi
done
sleep 0.5 # idle: connections the last phase left are closed by now
end_rss=$(rss_kb) end_fds=$(fds)
peak_rss=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$samples")
errors=$(awk '{s += $1} END {print s + 0}' "$tmp/errors" 2>/dev/null || echo 0)
kill -TERM "$demo_pid"
t0=$(date +%s.%N)
status=0
wait "$demo_pid" || status=$?
exit_ms=$(echo "($(date +%s.%N) - $t0) * 1000 / 1" | bc)
demo_pid=
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=

echo
echo "soak: $total requests, $churns connection churns, $phase phases, $(wc -l <"$samples") samples every ${SAMPLE_S}s"
echo "soak: warm-up (after $warm_at requests): RSS $warm_rss kB, $warm_fds fds"
echo "soak: end:                         RSS $end_rss kB, $end_fds fds (peak RSS $peak_rss kB)"
echo "soak: SIGTERM: exit $status after $exit_ms ms; wrk errors: $errors"
rc=0
measured=$((phase - 1))
if [ "$measured" -lt 2 ]; then
    echo "soak: FAIL: $measured phases measured after the warm-up; a soak needs at least 2" \
        "(raise REQUESTS or CHURNS, or set MIN_PHASES=3)"
    rc=1
fi
if [ "$end_rss" -gt $((warm_rss + RSS_SLACK_KB)) ]; then
    echo "soak: FAIL: RSS grew by $((end_rss - warm_rss)) kB after warm-up (slack $RSS_SLACK_KB)"
    rc=1
fi
if [ "$end_fds" -gt "$warm_fds" ]; then
    echo "soak: FAIL: descriptors grew from $warm_fds to $end_fds"
    rc=1
fi
[ "$status" -eq 0 ] || { echo "soak: FAIL: eddy-demo exited $status"; rc=1; }
[ "$errors" -eq 0 ] || { echo "soak: FAIL: $errors wrk errors"; rc=1; }
[ "$rc" -eq 0 ] && echo "soak: PASS: no growth in RSS or descriptors over $measured phases after warm-up"
exit "$rc"
