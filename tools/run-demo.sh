#!/usr/bin/env bash
# Set-up, a Release build, then the main program in the foreground
# (Ctrl-C stops it).  For now the main program is the echo server on
# port ${PORT:-2345}; when the demo server lands, this script runs it.
#   PORT=8080 tools/run-demo.sh
#   EDDY_PRESET=default tools/run-demo.sh     (RelWithDebInfo instead)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
preset=${EDDY_PRESET:-release}
port=${PORT:-2345}

tools/setup.sh
cmake --preset "$preset"
cmake --build --preset "$preset" -j "${EDDY_JOBS:-2}"

bin=build/$preset/apps/echo/eddy-echo
if [ ! -x "$bin" ]; then
    echo "run-demo: $bin was not built (apps/echo missing?)" >&2
    exit 1
fi
echo "run-demo: $bin --port $port"
exec "$bin" --port "$port"
