#!/usr/bin/python3
"""The demo's home page in a real browser (ctest label "browser").

Starts eddy-demo (--port 0 --time-port 0 --delay-ms 200, loopback only),
opens the deep link /#race=block,noblock,offload,coro&n=10 in headless Chromium
(Debian's chromium + chromium-driver, driven by python3-selenium), waits
for the timelines and checks, from the page's DOM:

  - block's bars form a staircase: sorted by their end, the k-th ends no
    sooner than k delays (and not 5 delays after its turn), and the median
    step between two ends is 0.75 to 2 delays;
  - noblock's bars overlap: every one starts before any one ends, and the
    whole race takes less than 4 delays;
  - offload sits between: at least 1.5 delays (10 requests, a pool of 4),
    less than block's wall time; every request answered 200;
  - the live panel shows /stats counters and the watchdog's report naming
    api_block_fetch;
  - at phone width (390 px) nothing is wider than the screen;
  - with JavaScript off, the lesson and each route's code are on the page.

It saves a screenshot (--screenshot PATH; tools: the README's is
docs/demo-page.png).  Exits 77 (ctest: skipped) when chromium,
chromedriver or selenium is missing: tools/setup.sh --browser installs them.
Every wait is bounded; the processes it starts are ended by their PID.
"""
import argparse
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
DELAY = 200  # --delay-ms: the time service's fixed wait
N = 10

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--no-proxy-server", "--hide-scrollbars",
    "--disable-extensions", "--disable-default-apps", "--mute-audio",
]


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def start_demo(path, errfile):
    args = [path, "--host", "127.0.0.1", "--port", "0", "--time-port", "0",
            "--delay-ms", str(DELAY), "--stall-ms", "100"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL)
    line = b""
    deadline = time.monotonic() + 10
    while b"\n" not in line:
        left = deadline - time.monotonic()
        if left <= 0:
            p.kill()
            p.wait()
            fail("eddy-demo printed no start line within 10 s")
        r, _, _ = select.select([p.stdout], [], [], left)
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                p.wait()
                fail("eddy-demo exited before its start line")
            line += chunk
    words = line.decode().split()
    # "eddy-demo: port P time-port Q: serving ..."
    if len(words) < 3 or words[1] != "port":
        p.kill()
        p.wait()
        fail("unexpected start line: %r" % line)
    return p, int(words[2])


def stop_demo(p):
    if p.poll() is not None:
        return p.returncode
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        fail("eddy-demo did not exit within 15 s of SIGTERM")


def browser(webdriver, Options, Service, chromium, driver, profile, js=True):
    o = Options()
    o.binary_location = chromium
    for f in CHROMIUM_FLAGS:
        o.add_argument(f)
    o.add_argument("--user-data-dir=" + profile)
    o.add_argument("--window-size=1280,1000")
    if not js:
        o.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    d = webdriver.Chrome(service=Service(executable_path=driver), options=o)
    d.set_page_load_timeout(60)
    d.set_script_timeout(60)
    return d


BARS_JS = """
const out = {};
for (const fig of document.querySelectorAll('figure.timeline')) {
  out[fig.dataset.route] = {
    state: fig.dataset.state || '',
    wall: parseFloat((fig.querySelector('svg') || {dataset: {}}).dataset.wall),
    bars: Array.from(fig.querySelectorAll('rect.bar')).map(r => [
      parseFloat(r.dataset.start), parseFloat(r.dataset.end), parseInt(r.dataset.status, 10)]),
  };
}
return out;
"""


def check_races(tl):
    for name in ("block", "noblock", "offload", "coro"):
        t = tl.get(name)
        if not t or t["state"] != "done":
            fail("%s's timeline was not drawn: %r" % (name, t))
        if len(t["bars"]) != N:
            fail("%s has %d bars, want %d" % (name, len(t["bars"]), N))
        bad = [b for b in t["bars"] if b[2] != 200]
        if bad:
            fail("%s: requests that did not answer 200: %r" % (name, bad))
        for s, e, _ in t["bars"]:
            if not (0 <= s <= e):
                fail("%s: a bar from %.1f to %.1f ms" % (name, s, e))

    # block: a staircase, each end about one delay after the one before.
    # Served one after another, the k-th answer cannot leave before k
    # delays (the time service's timer never fires early): an exact lower
    # bound.  An answer may be seen late on a loaded machine, so a single
    # step may look short; the median step is about one delay, and none
    # comes much later than its turn.
    ends = sorted(b[1] for b in tl["block"]["bars"])
    print("block ends (ms):", " ".join("%.0f" % e for e in ends))
    for k, e in enumerate(ends):
        if not ((k + 1) * DELAY - 1 <= e <= (k + 1) * DELAY + 5 * DELAY):
            fail("block is no staircase: answer %d ended at %.1f ms, want %d..%d"
                 % (k + 1, e, (k + 1) * DELAY - 1, (k + 6) * DELAY))
    steps = sorted(ends[k] - ends[k - 1] for k in range(1, N))
    median = steps[len(steps) // 2]
    print("block median step %.1f ms" % median)
    if not (0.75 * DELAY <= median <= 2 * DELAY):
        fail("block's median step is %.1f ms, not about one delay (%d ms)" % (median, DELAY))

    # noblock, and coro (straight-line code on a fiber): one column, every
    # bar overlaps every other.
    for name in ("noblock", "coro"):
        nb = tl[name]["bars"]
        last_start = max(b[0] for b in nb)
        first_end = min(b[1] for b in nb)
        print("%s: last start %.1f ms, first end %.1f ms, wall %.1f ms"
              % (name, last_start, first_end, tl[name]["wall"]))
        if not last_start < first_end:
            fail("%s's bars do not all overlap: one starts at %.1f ms, one ends at %.1f ms"
                 % (name, last_start, first_end))
        if first_end < 0.75 * DELAY:
            fail("a %s request ended after %.1f ms, before the delay" % (name, first_end))
        if tl[name]["wall"] >= 4 * DELAY:
            fail("%s took %.1f ms: not one delay but several" % (name, tl[name]["wall"]))

    # offload: waves of the pool's size (4), so between the two.
    ow, bw = tl["offload"]["wall"], tl["block"]["wall"]
    print("offload wall %.1f ms, block wall %.1f ms" % (ow, bw))
    if not (1.5 * DELAY <= ow < bw):
        fail("offload's wall time %.1f ms is not between 1.5 delays and block's %.1f ms" % (ow, bw))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", required=True, help="the eddy-demo binary")
    ap.add_argument("--screenshot", help="save a PNG of the page after the races")
    ap.add_argument("--phone-screenshot", help="save a PNG of its top at phone width")
    a = ap.parse_args()

    # tests/kernel.cmake runs this build's tests again inside QEMU guests
    # (hostname eddy-vm, the host's / mounted read-only, emulated CPU): the
    # page does not depend on the kernel, and Chromium under emulation would
    # only time out.  It runs on the host.
    if socket.gethostname() == "eddy-vm" or os.statvfs("/").f_flag & os.ST_RDONLY:
        print("SKIP: inside a kernel-test guest (read-only root): the browser test runs on the host")
        return SKIP
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait
        from selenium.common.exceptions import TimeoutException
    except ImportError:
        print("SKIP: python3-selenium is not installed (tools/setup.sh --browser)")
        return SKIP
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    for exe in (chromium, driver):
        if not os.access(exe, os.X_OK):
            print("SKIP: %s is not installed (tools/setup.sh --browser)" % exe)
            return SKIP

    tmp = tempfile.mkdtemp(prefix="eddy-browser-")
    errpath = os.path.join(tmp, "demo.err")
    demo = None
    drivers = []
    try:
        with open(errpath, "wb") as err:
            demo, port = start_demo(a.demo, err)
        base = "http://127.0.0.1:%d/" % port

        # 1. The deep link runs the races on load.
        d = browser(webdriver, Options, Service, chromium, driver, os.path.join(tmp, "p1"))
        drivers.append(d)
        t0 = time.monotonic()
        d.get(base + "#race=block,noblock,offload,coro&n=%d" % N)
        try:
            WebDriverWait(d, 120, poll_frequency=0.2).until(
                lambda x: x.execute_script("return document.body.dataset.races") == "done")
        except TimeoutException:
            fail("the races did not finish within 120 s; status: %r"
                 % d.execute_script("return document.getElementById('status').textContent"))
        print("races done in %.1f s" % (time.monotonic() - t0))
        status = d.execute_script("return document.getElementById('status').textContent")
        if not status.startswith("Done:"):
            fail("the page's status says %r" % status)
        check_races(d.execute_script(BARS_JS))

        # 2. Live: the counters and the watchdog's reports, from the page.
        try:
            WebDriverWait(d, 10, poll_frequency=0.2).until(lambda x: x.execute_script(
                "return document.querySelectorAll('#stalls li[data-seq]').length > 0 && "
                "document.querySelectorAll('#counters dd').length > 0"))
        except TimeoutException:
            fail("the live panel shows no stall report or no counters")
        stalls = d.execute_script("return document.getElementById('stalls').textContent")
        if "api_block_fetch" not in stalls:
            fail("the stall reports do not name api_block_fetch: %r" % stalls)
        lat = d.execute_script("return document.getElementById('lat').textContent")
        if "/api/block" not in lat or "/api/noblock" not in lat:
            fail("the latency table lacks the routes: %r" % lat)

        if a.screenshot:
            h = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(1280, min(int(h) + 20, 6000))
            time.sleep(0.5)  # a resize redraws the timelines (debounced)
            if not d.save_screenshot(a.screenshot):
                fail("could not save " + a.screenshot)
            print("screenshot:", a.screenshot)

        # 3. Phone width: nothing wider than the screen.
        d.set_window_size(390, 844)
        time.sleep(0.5)
        over = d.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        if over[0] > over[1] + 1:
            fail("at phone width the page is %d px wide in a %d px window" % tuple(over))
        if a.phone_screenshot:
            d.execute_script("document.getElementById('route-block').scrollIntoView()")
            d.save_screenshot(a.phone_screenshot)
        d.quit()
        drivers.remove(d)

        # 4. JavaScript off: the explanation and the code are there.
        d = browser(webdriver, Options, Service, chromium, driver, os.path.join(tmp, "p2"), js=False)
        drivers.append(d)
        d.get(base)
        if d.execute_script("return 1") == 1:
            pass  # WebDriver's own scripts still run; the page's do not (checked below)
        text = d.find_element("tag name", "body").text
        for want in ("every handler on one thread", "JavaScript is off",
                     "eddy_http_blocking_fetch", "eddy_http_fetch_start", "eddy_work",
                     "GET /api/block", "GET /api/noblock", "GET /api/offload"):
            if want not in text:
                fail("with JavaScript off the page lacks %r" % want)
        if d.execute_script("return document.body.dataset.races || ''"):
            fail("the page's script ran with JavaScript off")
        d.quit()
        drivers.remove(d)

        rc = stop_demo(demo)
        demo = None
        if rc != 0:
            fail("eddy-demo exited with %d" % rc)
        print("ok: staircase, column, waves, live panel, phone width, no-JS text")
        return 0
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:
                pass
        if demo is not None and demo.poll() is None:
            demo.kill()
            demo.wait()
        try:
            with open(errpath, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            if tail:
                print("--- eddy-demo stderr (tail) ---\n" + tail)
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
