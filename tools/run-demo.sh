#!/usr/bin/env bash
# Set-up, a Release build, then the demo server (eddy-demo) in the
# foreground on port ${PORT:-2345}, its time service on 2346 (Ctrl-C stops
# it gracefully).  Extra arguments go to eddy-demo (see --help).
#   PORT=8080 tools/run-demo.sh --delay-ms 200
#   EDDY_PRESET=default tools/run-demo.sh     (RelWithDebInfo instead)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
preset=${EDDY_PRESET:-release}
port=${PORT:-2345}

tools/setup.sh
cmake --preset "$preset"
cmake --build --preset "$preset" -j "${EDDY_JOBS:-2}"

bin=build/$preset/apps/demo/eddy-demo
if [ ! -x "$bin" ]; then
    echo "run-demo: $bin was not built" >&2
    exit 1
fi
echo "run-demo: $bin --port $port $*"
echo "run-demo: try, in another terminal:"
echo "  build/$preset/tools/load/eddy-load -c 10 -n 10 http://127.0.0.1:$port/api/noblock"
echo "  build/$preset/tools/load/eddy-load -c 10 -n 10 http://127.0.0.1:$port/api/block"
echo "  build/$preset/tools/load/eddy-load -c 10 -n 10 http://127.0.0.1:$port/api/offload"
exec "$bin" --port "$port" "$@"
