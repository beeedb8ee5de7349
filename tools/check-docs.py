#!/usr/bin/env python3
"""check-docs: run every command the documentation shows, so it cannot rot.

    tools/check-docs.py --build DIR [--source DIR] [--keep] [-v] [FILE.md ...]
    tools/check-docs.py --list          (the substitution and skip tables)

Files: README.md, docs/*.md and tools/**/README.md (or the FILEs given,
relative to the source). Commands: every line of a ```sh, ```bash or
```shell block (comments stripped, `\\` continuations joined), and every
"$ " line of a ```console block (or of a plain ``` block that has one).

For every command, run or skipped:
  - paths: each word naming something in the tree (tools/, docs/, tests/,
    runtime/, proto/, apps/, .ci/, build/) must exist; build/default,
    build/asan and build/release stand for DIR, the build under test;
    the value of an output option (--json, --md, --timeline, --keep-raw, -o)
    is exempt;
  - flags: each option given to one of eddy's programs must exist: for a
    script under tools/, in the script's text; for a built program, in its
    --help; tools/run-demo.sh passes its options on to eddy-demo;
  - presets: each `--preset NAME` must be in CMakePresets.json.
Then, unless skipped, the command runs (bash, 60 s at most) in a scratch
directory that looks like the source tree: tools/, tests/, runtime/,
proto/, apps/ and .ci/ are symbolic links to the source, docs/ and
README.md are copies (commands may write there), build/{default,asan,release}
are links to DIR. It must exit 0. Background commands (ending in `&`) are
started, waited for until their --port accepts connections, and stopped by
PID (SIGTERM, then SIGKILL) at the end of their file; they must still be
running then and exit 0 (eddy's own servers, eddy-demo and eddy-echo,
handle SIGTERM; another program may also die of it). The network is loopback only: servers are bound
to 127.0.0.1, and a command with a URL elsewhere is skipped.

Markdown links to relative paths must exist too, and so must the Markdown
files the text names (FILE.md) and the source paths it quotes as `code`.
Exit status: 0 when everything passed or was skipped for a stated reason,
1 otherwise.
"""

import argparse
import ctypes
import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO_PREFIXES = ("tools/", "docs/", "tests/", "runtime/", "proto/", "apps/", ".ci/", "build/")
OUTPUT_OPTIONS = {"--json", "--md", "--timeline", "--keep-raw", "-o"}
PRESET_DIRS = ("default", "asan", "release")
# The documented ports, each replaced by a free loopback port per run.
DOC_PORTS = ("2345", "2346", "23450")
FOREGROUND_TIMEOUT_S = 60
BACKGROUND_READY_S = 15

# Programs known by their bare name in the docs (installed names).
BARE_PROGRAMS = {"eddy-load": "build/release/tools/load/eddy-load",
                 "eddy-demo": "build/release/apps/demo/eddy-demo"}
# Scripts whose options are another program's.
PASSES_OPTIONS_TO = {"tools/run-demo.sh": "build/release/apps/demo/eddy-demo"}


class Skip(Exception):
    """A command that is not run, with the reason."""


# ---- the substitution and skip tables -------------------------------------
#
# Each rule: (name, regex searched in the command, function(cmd, ctx) that
# returns the command to run or raises Skip(reason)).  Rules apply in order;
# every matching rule applies.  The reason says why; --list prints them.

def _skip(reason):
    def f(cmd, ctx):
        raise Skip(reason)
    f.__doc__ = reason
    return f


def _ports(cmd, ctx):
    """The documented ports (2345, 2346, 23450) become free loopback ports."""
    for p in DOC_PORTS:
        cmd = re.sub(r"(?<![0-9])%s(?![0-9])" % p, str(ctx.ports[p]), cmd)
    return cmd


def _run_demo(cmd, ctx):
    """tools/run-demo.sh ARGS: the script installs packages and builds the
    release preset before it execs eddy-demo in the foreground; here the
    eddy-demo of the build under test starts in the background instead,
    with ARGS."""
    m = re.search(r"tools/run-demo\.sh(.*)$", cmd)
    return "build/release/apps/demo/eddy-demo%s &" % m.group(1)


def _demo_defaults(cmd, ctx):
    """eddy-demo binds to 127.0.0.1 (its default is every address), and gets
    its documented default ports (--port 2345 --time-port 2346, substituted
    next) spelt out when the command leaves them out."""
    add = ""
    if "--host" not in cmd:
        add += " --host 127.0.0.1"
    if not re.search(r"--port\s", cmd):
        add += " --port 2345"
    if "--time-port" not in cmd:
        add += " --time-port 2346"
    return re.sub(r"(eddy-demo)(\s|$)", r"\1%s\2" % add, cmd, count=1)


def _bench_http(cmd, ctx):
    """tools/bench/bench-http.sh ARGS: a benchmark takes ~10 minutes on a quiet
    machine; here it runs with --dry-run: every option and scenario is
    checked and, with --no-build, that the binaries are in the build
    directory (default build/bench, which only a benchmark builds: the docs
    must name --build-dir build/release with --no-build); nothing is
    installed, built or started."""
    return cmd + " --dry-run"


def _bench_echo(cmd, ctx):
    """tools/bench-echo.sh ARGS: runs for real but short, on the build under
    test: ARGS --no-build --build-dir build/release --rounds 1 --time 1
    --sizes 64 (later options win)."""
    return cmd + " --no-build --build-dir build/release --rounds 1 --time 1 --sizes 64"


def _soak(cmd, ctx):
    """tools/soak.sh: with REQUESTS=1 CHURNS=1 MIN_PHASES=3 CHURN_S=1 KEEP_S=1
    SAMPLE_S=0.5 (three phases of ~2 s: the shortest soak that can pass),
    against the build under test; skipped when wrk is not installed."""
    if not shutil.which("wrk"):
        raise Skip("wrk is not installed (tools/setup.sh --bench installs it)")
    demo = "build/release/apps/demo/eddy-demo"
    args = cmd.split("tools/soak.sh", 1)[1].strip()
    return ("REQUESTS=1 CHURNS=1 MIN_PHASES=3 CHURN_S=1 KEEP_S=1 SAMPLE_S=0.5 tools/soak.sh %s"
            % (args or demo))


def _wrk(cmd, ctx):
    """wrk ... -dNs: one second; skipped when wrk is not installed."""
    if not shutil.which("wrk"):
        raise Skip("wrk is not installed (tools/setup.sh --bench installs it)")
    return re.sub(r"-d\s*[0-9.]+s", "-d1s", cmd)


def _ctest(cmd, ctx):
    """ctest --preset P ARGS: lists the tests ARGS select in the build under
    test (ctest --test-dir DIR ARGS -N) and requires at least one; running
    them would run this test again."""
    cmd = re.sub(r"--preset\s+\S+", "--test-dir build/release", cmd)
    cmd = re.sub(r"\s-j\s*[0-9]+", "", cmd)
    return cmd + " -N | grep -E 'Total Tests: [1-9]'"


def _install_prefix(cmd, ctx):
    """/opt/eddy (an install prefix) becomes a directory in the scratch tree."""
    return cmd.replace("/opt/eddy", os.path.join(ctx.scratch, "opt/eddy"))


def _cc(cmd, ctx):
    """cc app.c / server.c: the scratch tree holds a minimal app.c (a loop)
    and server.c (an HTTP server); a sanitizer build's libraries need the
    sanitizer flags at link time too."""
    flags = " -fsanitize=address,undefined" if ctx.sanitize else ""
    return re.sub(r"^cc ", "cc%s " % flags, cmd)


def _bench_timeouts(cmd, ctx):
    """bench-timeouts [N M]: 1000 connections, 20000 resets (seconds, not
    minutes)."""
    return re.sub(r"(bench-timeouts)(\s+[0-9]+\s+[0-9]+)?", r"\1 1000 20000", cmd)


RULES = [
    ("setup", r"(^|\s)tools/setup\.sh", _skip(
        "installs packages with apt-get (the machine is set up already)")),
    ("packages", r"(^|\s)(sudo|apt-get|apt|dpkg|pip3?)\s", _skip(
        "installs or changes system packages")),
    ("vm", r"(^|\s)tools/vm/", _skip(
        "boots a kernel under QEMU (and downloads it on first use)")),
    ("network", r"(https?|ftp)://(?!(127\.0\.0\.1|localhost|\[::1\])[:/])", _skip(
        "reaches beyond loopback")),
    ("test-all", r"(^|\s)tools/test-all\.sh", _skip(
        "runs the whole suite (and so this test) recursively")),
    ("fuzz", r"(^|\s)tools/fuzz\.sh", _skip(
        "builds a separate clang tree and fuzzes for a minute; ctest runs the "
        "same corpus as test_corpus")),
    ("preset-build", r"(^|\s)cmake\s+(--build\s+)?--preset", _skip(
        "configures or builds a whole preset; the build under test is built "
        "already (the preset names are checked)")),
    ("run-demo", r"(^|\s)tools/run-demo\.sh", _run_demo),
    ("demo-defaults", r"eddy-demo(\s|$)", _demo_defaults),
    ("ports", r"(?<![0-9])(2345|2346|23450)(?![0-9])", _ports),
    ("bench-http", r"(^|\s)tools/bench/bench-http\.sh", _bench_http),
    ("bench-echo", r"(^|\s)tools/bench-echo\.sh", _bench_echo),
    ("soak", r"(^|\s)tools/soak\.sh", _soak),
    ("wrk", r"(^|\s)wrk\s", _wrk),
    ("ctest", r"^ctest\s", _ctest),
    ("install-prefix", r"/opt/eddy", _install_prefix),
    ("cc", r"^cc\s", _cc),
    ("bench-timeouts", r"bench-timeouts", _bench_timeouts),
]

FIXTURES = {
    "app.c": """#include <eddy/eddy.h>
int main(void)
{
    struct eddy_loop *loop;
    if (eddy_loop_init(&loop, NULL) < 0)
        return 1;
    return eddy_loop_destroy(loop) < 0;
}
""",
    "server.c": """#include <eddy/http.h>
int main(void)
{
    struct eddy_loop *loop;
    struct eddy_http_server *srv;
    struct eddy_http_options o = {.host = "127.0.0.1"};
    if (eddy_loop_init(&loop, NULL) < 0 || eddy_http_server_init(&srv, loop, &o) < 0)
        return 1;
    eddy_http_server_destroy(srv);
    return eddy_loop_destroy(loop) < 0;
}
""",
}


# ---- reading the Markdown --------------------------------------------------

def strip_comment(line):
    """The line without its shell comment (a # outside quotes, at the start or
    after white space)."""
    q = None
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = None
            elif c == "\\" and q == '"':
                continue
        elif c in "'\"":
            q = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_of(path):
    """[(line number, command)] of every command block in the file."""
    out = []
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```+\s*([A-Za-z]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang = m.group(2).lower()
        body = []
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```+\s*$", lines[j]):
            body.append((j + 1, lines[j]))
            j += 1
        if lang in ("sh", "bash", "shell"):
            pending, start = "", None
            for n, text in body:
                text = text.strip()
                if start is None:
                    start = n
                if text.endswith("\\"):
                    pending += text[:-1] + " "
                    continue
                cmd = strip_comment(pending + text).strip()
                pending = ""
                if cmd:
                    out.append((start, cmd))
                start = None
        elif lang in ("console", "") and any(t.startswith("$ ") for _, t in body):
            for n, text in body:
                if text.startswith("$ "):
                    cmd = strip_comment(text[2:]).strip()
                    if cmd:
                        out.append((n, cmd))
        i = j + 1
    return out


def prose_lines(path):
    """[(line number, text)] of the lines outside fenced blocks."""
    out, fenced = [], False
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        if re.match(r"^\s*```", line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def prose_problems(ctx, path):
    """Markdown files the text names, and source paths in `code`, that do
    not exist."""
    problems = []
    here = os.path.dirname(path)
    for n, line in prose_lines(path):
        for m in re.finditer(r"(?<![\w/.*-])([\w./-]*[\w-]\.md)(?![\w])", line):
            name = m.group(1)
            if re.match(r"^[a-z]+://", name) or "://" in line[max(0, m.start() - 60):m.start()]:
                continue
            if not (os.path.exists(os.path.normpath(os.path.join(here, name)))
                    or os.path.exists(os.path.join(ctx.source, name))
                    or os.path.basename(name) in ctx.md_names and "/" not in name):
                problems.append((n, "names %s, which is not in the repository" % name))
        for m in re.finditer(r"`([^`]+)`", line):
            for w in m.group(1).split():
                w = w.rstrip(".,;:)")
                if (w.startswith(REPO_PREFIXES[:-1]) and not re.search(r"[*?<>{}$]", w)
                        and not os.path.exists(os.path.join(ctx.source, w))):
                    problems.append((n, "`%s`: no such path" % w))
    return problems


def links_of(path):
    """[(line number, target)] of the relative links in the file."""
    out = []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        for m in re.finditer(r"\]\(([^)\s]+)\)", line):
            t = m.group(1)
            if re.match(r"^[a-z]+:", t) or t.startswith("#"):
                continue
            out.append((n, t.split("#", 1)[0]))
    return out


# ---- the checks -------------------------------------------------------------

class Ctx:
    pass


def segments(cmd):
    """The simple commands of a command line: lists of words, split at
    &&, ||, ;, | and &."""
    try:
        lex = shlex.shlex(cmd, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        words = list(lex)
    except ValueError:
        return [cmd.split()]
    segs, cur = [], []
    for w in words:
        if w and set(w) <= set(";&|"):
            if cur:
                segs.append(cur)
            cur = []
        else:
            cur.append(w)
    if cur:
        segs.append(cur)
    return segs


def program_of(seg):
    """(index of the program, program) of a simple command, after VAR=value
    assignments."""
    for i, w in enumerate(seg):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w):
            return i, w
    return len(seg), None


_help_cache = {}


def help_text(ctx, prog):
    if prog not in _help_cache:
        try:
            r = subprocess.run([prog, "--help"], cwd=ctx.scratch, capture_output=True,
                               text=True, timeout=10)
            _help_cache[prog] = r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            _help_cache[prog] = ""
            print("  (%s --help: %s)" % (prog, e))
    return _help_cache[prog]


def static_problems(ctx, cmd):
    """What is wrong with the command without running it."""
    problems = []
    for seg in segments(cmd):
        pi, prog = program_of(seg)
        prev = None
        for w in seg:
            if (w.startswith(REPO_PREFIXES) and prev not in OUTPUT_OPTIONS
                    and prev not in (">", ">>") and not re.search(r"[*?<>{}$]", w)):
                if not os.path.exists(os.path.join(ctx.scratch, w)):
                    problems.append("no such path: %s" % w)
            if prev == "--preset" and w not in ctx.presets:
                problems.append("no such preset: %s (CMakePresets.json has %s)"
                                % (w, ", ".join(sorted(ctx.presets))))
            prev = w
        if prog is None:
            continue
        target = BARE_PROGRAMS.get(prog, prog)
        target = PASSES_OPTIONS_TO.get(target, target)
        path = os.path.join(ctx.scratch, target)
        if not target.startswith(("tools/", "build/")) or not os.path.isfile(path):
            continue
        flags = [w.split("=", 1)[0] for w in seg[pi + 1:]
                 if re.match(r"^--?[A-Za-z][-A-Za-z0-9]*(=.*)?$", w)]
        if not flags:
            continue
        if target.startswith("tools/") and not os.access(path, os.X_OK):
            problems.append("not executable: %s" % target)
        try:
            text = open(path, encoding="utf-8").read()
            is_script = text.startswith("#!")
        except UnicodeDecodeError:
            is_script = False
        if not is_script:
            text = help_text(ctx, path)
        for f in flags:
            if not re.search(r"(?<![-A-Za-z0-9])%s(?![-A-Za-z0-9])" % re.escape(f), text):
                problems.append("%s has no option %s" % (target, f))
    return problems


def substitute(ctx, cmd):
    """(command to run, [names of the rules applied]); raises Skip."""
    applied = []
    for name, rx, fn in RULES:
        if re.search(rx, cmd):
            cmd = fn(cmd, ctx)
            applied.append(name)
    return cmd, applied


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=30):
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


def _die_with_us():
    """In the child: SIGTERM when this script ends, however it ends (ctest
    killing it on a timeout included), so no server outlives the test."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_foreground(ctx, cmd, log):
    """The exit status, or a string when the command timed out (then its
    whole process group, which it leads, is killed)."""
    with open(log, "w") as f:
        p = subprocess.Popen(["bash", "-c", "set -o pipefail; " + cmd], cwd=ctx.scratch,
                             stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=_die_with_us)
        try:
            return p.wait(timeout=FOREGROUND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return "timeout (%d s)" % FOREGROUND_TIMEOUT_S


# eddy's own servers: they drain on SIGTERM and exit 0.
OWN_SERVERS = ("eddy-demo", "eddy-echo")


def own_server(cmd):
    """True when cmd (after any VAR=value prefixes) runs one of OWN_SERVERS."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        return False
    words = [w for w in words if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
    return bool(words) and os.path.basename(words[0]) in OWN_SERVERS


def start_background(ctx, cmd, log):
    cmd = cmd.rstrip().rstrip("&").strip()
    f = open(log, "w")
    # exec: the PID we stop is the program's own.
    p = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=ctx.scratch, stdout=f,
                         stderr=subprocess.STDOUT, start_new_session=True,
                         preexec_fn=_die_with_us)
    f.close()
    p.own_server = own_server(cmd)
    ports = [int(x) for x in re.findall(r"--port\s+([0-9]+)", cmd) if x != "0"]
    end = time.monotonic() + BACKGROUND_READY_S
    while time.monotonic() < end:
        if p.poll() is not None:
            return p, "exited with %d before it was ready:\n%s" % (p.returncode, tail(log))
        if all(port_open(x) for x in ports):
            return p, None
        time.sleep(0.05)
    return p, "port %s not open after %d s:\n%s" % (ports, BACKGROUND_READY_S, tail(log))


def stop_background(p, log):
    """Stops p by its PID; None, or what went wrong."""
    if p.poll() is not None:
        return "exited with %d while it should have been running:\n%s" % (p.returncode, tail(log))
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return "did not stop within 10 s of SIGTERM (killed)"
    if rc != 0 and (p.own_server or rc != -signal.SIGTERM):
        return "exited with %d after SIGTERM%s:\n%s" % (
            rc, " (eddy's own servers exit 0)" if p.own_server else "", tail(log))
    return None


def check_file(ctx, rel):
    failures = 0
    path = os.path.join(ctx.source, rel)
    print("== %s" % rel)
    for n, target in links_of(path):
        full = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if not os.path.exists(full):
            print("FAIL %s:%d: link to %s: no such file" % (rel, n, target))
            failures += 1
    for n, problem in prose_problems(ctx, path):
        print("FAIL %s:%d: %s" % (rel, n, problem))
        failures += 1
    background = []
    try:
        for n, cmd in commands_of(path):
            where = "%s:%d" % (rel, n)
            problems = static_problems(ctx, cmd)
            try:
                run, applied = substitute(ctx, cmd)
            except Skip as e:
                if problems:
                    print("FAIL %s: %s\n     %s" % (where, cmd, "\n     ".join(problems)))
                    failures += 1
                else:
                    print("skip %s: %s\n     (%s)" % (where, cmd, e))
                continue
            if problems:
                print("FAIL %s: %s\n     %s" % (where, cmd, "\n     ".join(problems)))
                failures += 1
                continue
            note = " [%s]" % ", ".join(applied) if applied else ""
            if ctx.verbose or run != cmd:
                print("run  %s: %s\n  as %s%s" % (where, cmd, run, note))
            else:
                print("run  %s: %s" % (where, cmd))
            ctx.nbg += 1
            log = os.path.join(ctx.scratch, "cmd-%d.log" % ctx.nbg)
            t0 = time.monotonic()
            if run.rstrip().endswith("&"):
                p, err = start_background(ctx, run, log)
                if err:
                    print("FAIL %s: in the background: %s" % (where, err))
                    failures += 1
                    stop_background(p, log)
                else:
                    background.append((where, p, log))
                    print("  ok  started in the background, PID %d (%.1f s)"
                          % (p.pid, time.monotonic() - t0))
                continue
            rc = run_foreground(ctx, run, log)
            dt = time.monotonic() - t0
            if rc != 0:
                print("FAIL %s: exit %s after %.1f s:\n%s" % (where, rc, dt, tail(log)))
                failures += 1
            else:
                print("  ok  %.1f s" % dt)
                if ctx.verbose:
                    print(tail(log, 10))
    finally:
        # Stopped by PID whatever happened above.
        for where, p, log in background:
            err = stop_background(p, log)
            if err:
                print("FAIL %s: the background command %s" % (where, err))
                failures += 1
    return failures


def default_files(source):
    files = ["README.md"]
    files += sorted(os.path.relpath(p, source) for p in glob.glob(os.path.join(source, "docs/*.md")))
    files += sorted(os.path.relpath(p, source)
                    for p in glob.glob(os.path.join(source, "tools/**/README.md"), recursive=True))
    return [f for f in files if os.path.exists(os.path.join(source, f))]


def make_scratch(ctx):
    s = ctx.scratch
    for name in ("tools", "tests", "runtime", "proto", "apps", ".ci", "CMakeLists.txt",
                 "CMakePresets.json", "LICENSE"):
        if os.path.exists(os.path.join(ctx.source, name)):
            os.symlink(os.path.join(ctx.source, name), os.path.join(s, name))
    shutil.copytree(os.path.join(ctx.source, "docs"), os.path.join(s, "docs"))
    shutil.copy(os.path.join(ctx.source, "README.md"), os.path.join(s, "README.md"))
    os.mkdir(os.path.join(s, "build"))
    for p in PRESET_DIRS:
        os.symlink(ctx.build, os.path.join(s, "build", p))
    for name, text in FIXTURES.items():
        with open(os.path.join(s, name), "w") as f:
            f.write(text)


def list_rules():
    print(__doc__)
    print("Substitutions and skips, in the order they apply:\n")
    for name, rx, fn in RULES:
        doc = " ".join((fn.__doc__ or "").split())
        print("  %-15s /%s/\n      %s\n" % (name, rx, doc))


def main():
    ap = argparse.ArgumentParser(description="Run every command block of the docs.")
    ap.add_argument("--build", help="the build directory under test")
    ap.add_argument("--source", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--list", action="store_true", help="print the rules and stop")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("files", nargs="*", help="Markdown files, relative to the source")
    a = ap.parse_args()
    # SIGTERM (a timeout) unwinds like an exception: servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.list:
        list_rules()
        return 0
    if not a.build:
        ap.error("--build DIR is needed")
    ctx = Ctx()
    ctx.source = os.path.abspath(a.source)
    ctx.build = os.path.abspath(a.build)
    ctx.verbose = a.verbose
    ctx.nbg = 0
    if not os.path.isfile(os.path.join(ctx.build, "CMakeCache.txt")):
        print("check-docs: %s is not a build directory" % ctx.build)
        return 1
    cache = open(os.path.join(ctx.build, "CMakeCache.txt")).read()
    ctx.sanitize = re.search(r"^EDDY_SANITIZE:BOOL=(ON|1|TRUE)", cache, re.M) is not None
    presets = json.load(open(os.path.join(ctx.source, "CMakePresets.json")))
    ctx.presets = {p["name"] for k in ("configurePresets", "buildPresets", "testPresets")
                   for p in presets.get(k, []) if not p.get("hidden")}
    ctx.ports = {p: free_port() for p in DOC_PORTS}
    ctx.md_names = set()
    for d, dirs, files in os.walk(ctx.source):
        dirs[:] = [x for x in dirs if x not in (".git", "build")]
        ctx.md_names.update(f for f in files if f.endswith(".md"))
    ctx.scratch = tempfile.mkdtemp(prefix="eddy-check-docs.")
    t0 = time.monotonic()
    failures = 0
    try:
        make_scratch(ctx)
        for rel in a.files or default_files(ctx.source):
            failures += check_file(ctx, rel)
    finally:
        if a.keep:
            print("scratch directory kept: %s" % ctx.scratch)
        else:
            shutil.rmtree(ctx.scratch, ignore_errors=True)
    print("check-docs: %s in %.1f s" % ("%d failure(s)" % failures if failures else "all passed",
                                        time.monotonic() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
