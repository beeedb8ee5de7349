#!/usr/bin/env python3
"""report.py: the table and the goals of tools/bench/bench-http.sh.

usage: report.py RAWDIR [--json FILE] [--md FILE]

RAWDIR holds what bench-http.sh recorded: meta (key=value), runs.tsv (one
line per wrk run: CPU ticks of the server, busy ticks of the server's and
the load's CPUs, the wrk output file), idle.tsv (RSS before/after holding
N idle connections) and the wrk outputs.  Every figure is the median over
rounds with min..max; ratios are of medians, and also per round (each
pair ran within a minute of each other): their range says whether a
verdict is clear or within the noise, their median is the steadier
figure.  With a baseline (bench-http.sh --baseline), eddy/eddy-base is
the A/B of a change.
"""
import json
import os
import re
import statistics
import sys

SCEN = [
    ("ka100", "keep-alive, 100 conns"),
    ("ka1000", "keep-alive, 1,000 conns"),
    ("pipe16", "pipelined x16, 100 conns"),
    ("close", "Connection: close, 100 conns"),
    ("closedefer", "Connection: close, deferred accept (all), 100 conns"),
]
ORDER = ["eddy", "eddy-epoll", "eddy-base", "nginx", "limit", "limitd", "node", "tornado"]


def parse_wrk(path):
    text = open(path).read()
    out = {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None, "errors": 0}
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}
    for pct, val, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
        out["p%s_ms" % pct] = float(val) * scale[unit]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["errors"] += int(m.group(1))
    return out


def load(raw):
    meta = {}
    for line in open(os.path.join(raw, "meta")):
        k, _, v = line.rstrip("\n").partition("=")
        meta[k] = v
    hz = int(meta["hz"])
    runs = {}  # (scen, server) -> list of per-round dicts, in round order
    path = os.path.join(raw, "runs.tsv")
    for line in open(path) if os.path.exists(path) else []:
        f = line.rstrip("\n").split("\t")
        _, scen, kind, rnd, secs = f[:5]
        du, ds, c1b, c1t, c0b, c0t = (int(x) for x in f[5:11])
        w = parse_wrk(os.path.join(raw, f[11]))
        if scen == "pipe16":
            # wrk records one latency per batch of 16 but takes percentiles
            # over every answer: its pipelined percentiles are meaningless.
            w["p50_ms"] = w["p99_ms"] = None
        cpu = (du + ds) / hz
        n = max(w["requests"], 1)
        runs.setdefault((scen, kind), []).append({
            "round": int(rnd),
            "rps": w["rps"],
            "requests": w["requests"],
            "cpu_ms_per_100k": cpu * 1e3 * 1e5 / n,
            "cpu_us_per_req": cpu * 1e6 / n,
            "p50_ms": w["p50_ms"],
            "p99_ms": w["p99_ms"],
            "user_pct": 100.0 * du / (du + ds) if du + ds else 0.0,
            "server_cpu_pct": 100.0 * cpu / float(secs),
            # Busy time on the server's CPU that was not the server: other
            # processes (and softirq work not charged to it).  Noise gauge.
            "other_on_server_cpu_pct": 100.0 * (c1b - du - ds) / c1t if c1t else 0.0,
            "load_cpu_busy_pct": 100.0 * c0b / c0t if c0t else 0.0,
            "errors": w["errors"],
            "softirq_ms_per_100k": (int(f[12]) / hz * 1e3 * 1e5 / n) if len(f) > 12 else None,
        })
    idle = {}
    path = os.path.join(raw, "idle.tsv")
    for line in open(path) if os.path.exists(path) else []:
        _, mode, kind, rnd, n, r0, r1, a0, a1, dfd, closed = line.rstrip("\n").split("\t")
        n = int(n)
        idle.setdefault(("idle_" + mode, kind), []).append({
            "round": int(rnd),
            "conns": n,
            "rss_bytes_per_conn": (int(r1) - int(r0)) * 1024.0 / n,
            "anon_bytes_per_conn": (int(a1) - int(a0)) * 1024.0 / n,
            "server_fds_added": int(dfd),
            "closed_by_server": int(closed) if closed.isdigit() else None,
        })
    return meta, runs, idle


def stats(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": vals}


# (key, label, unit, format, lower is better)
METRICS = [
    ("rps", "throughput", "req/s", "{:,.0f}", False),
    ("cpu_ms_per_100k", "CPU per 100k req", "CPU-ms", "{:,.1f}", True),
    ("softirq_ms_per_100k", "softirq on server CPU per 100k req", "CPU-ms", "{:,.1f}", True),
    ("p99_ms", "p99 latency", "ms", "{:.2f}", True),
    ("p50_ms", "p50 latency", "ms", "{:.2f}", True),
    ("server_cpu_pct", "server CPU busy", "%", "{:.0f}", None),
    ("user_pct", "user share of server CPU", "%", "{:.0f}", None),
    ("other_on_server_cpu_pct", "other load on server CPU", "%", "{:.0f}", None),
    ("load_cpu_busy_pct", "wrk CPU busy", "%", "{:.0f}", None),
    ("errors", "wrk errors", "", "{:,.0f}", True),
]
IDLE_METRICS = [
    ("rss_bytes_per_conn", "RSS growth per conn", "B", "{:,.0f}", True),
    ("anon_bytes_per_conn", "anon RSS growth per conn", "B", "{:,.0f}", True),
    ("closed_by_server", "closed by server", "", "{:,.0f}", True),
]


def ratio_of(row, data, scen, key, s, base):
    """s against base in one row: the ratio of medians, and the per-round
    ratios (each pair ran back to back): their range and their median,
    which drift between rounds moves less than the medians' ratio."""
    a_st, b_st = row["servers"].get(s), row["servers"].get(base)
    if not a_st or not b_st or not b_st["median"]:
        return None
    ratio = {"of_medians": a_st["median"] / b_st["median"]}
    a, b = data.get((scen, s), []), data.get((scen, base), [])
    paired = [x[key] / y[key] for x, y in zip(a, b) if x[key] is not None and y[key]]
    if paired:
        ratio["per_round_min"] = min(paired)
        ratio["per_round_max"] = max(paired)
        ratio["per_round_median"] = statistics.median(paired)
        ratio["per_round_higher"] = sum(1 for v in paired if v > 1)
        ratio["rounds"] = len(paired)
    return ratio


def build(meta, runs, idle):
    servers = [s for s in ORDER if s in meta.get("servers", "").split()]
    rows = []
    blocks = [(k, l, runs, METRICS) for k, l in SCEN]
    n_idle = meta.get("idle_n", "?")
    blocks += [("idle_req", "idle %s conns, after 1 request each" % n_idle, idle, IDLE_METRICS),
               ("idle_bare", "idle %s conns, no request" % n_idle, idle, IDLE_METRICS)]
    for scen, label, data, metrics in blocks:
        if not any((scen, s) in data for s in servers):
            continue
        for key, mlabel, unit, fmt, lower in metrics:
            row = {"scenario": scen, "scenario_label": label, "metric": key, "label": mlabel,
                   "unit": unit, "format": fmt, "servers": {}, "ratios": {}}
            for s in servers:
                row["servers"][s] = stats([r[key] for r in data.get((scen, s), [])])
            if lower is not None:
                for s in servers:
                    if s != "nginx":
                        q = ratio_of(row, data, scen, key, s, "nginx")
                        if q:
                            row["ratios"][s] = q
                # The A/B of a change: this build against the baseline's.
                q = ratio_of(row, data, scen, key, "eddy", "eddy-base")
                if q:
                    row["ratio_base"] = q
            rows.append(row)
    return servers, rows


def find(rows, scen, metric):
    for r in rows:
        if r["scenario"] == scen and r["metric"] == metric:
            return r
    return None


def goals(rows):
    out = []

    def ratio_goal(text, scen, metric, op, limit, server="eddy"):
        r = find(rows, scen, metric)
        if not r or server not in r["ratios"]:
            if server == "eddy":
                out.append({"goal": text, "met": None, "detail": "not measured"})
            return
        q = r["ratios"][server]
        v = q["of_medians"]
        met = v <= limit if op == "<=" else v >= limit
        lo, hi = q.get("per_round_min", v), q.get("per_round_max", v)
        clear = (hi <= limit or lo > limit) if op == "<=" else (lo >= limit or hi < limit)
        out.append({"goal": text, "met": met, "value": v, "limit": limit, "clear": clear,
                    "detail": "%s/nginx %.2f (per round %.2f..%.2f), needs %s %.2f"
                              % (server, v, lo, hi, op, limit)})

    ratio_goal("server CPU per 100k keep-alive requests <= 0.85x nginx, 100 conns",
               "ka100", "cpu_ms_per_100k", "<=", 0.85)
    ratio_goal("server CPU per 100k keep-alive requests <= 0.85x nginx, 1,000 conns",
               "ka1000", "cpu_ms_per_100k", "<=", 0.85)
    ratio_goal("pipelined x16 req/s >= 4x nginx", "pipe16", "rps", ">=", 4.0)
    ratio_goal("Connection: close CPU per request <= 0.8x nginx", "close", "cpu_ms_per_100k", "<=", 0.8)
    ratio_goal("Connection: close CPU per request <= 0.8x nginx, both deferring accept (extra)",
               "closedefer", "cpu_ms_per_100k", "<=", 0.8)
    # The epoll backend (--epoll), issue 12's goals: at most nginx's CPU per request.
    ratio_goal("epoll backend: server CPU per keep-alive request <= 1.0x nginx, 100 conns",
               "ka100", "cpu_ms_per_100k", "<=", 1.0, "eddy-epoll")
    ratio_goal("epoll backend: Connection: close CPU per request <= 1.0x nginx",
               "close", "cpu_ms_per_100k", "<=", 1.0, "eddy-epoll")
    for scen, n in (("ka100", "100"), ("ka1000", "1,000")):
        r, p = find(rows, scen, "rps"), find(rows, scen, "p99_ms")
        if not r or "eddy" not in r["ratios"] or not p or "eddy" not in p["ratios"]:
            out.append({"goal": "keep-alive req/s >= nginx with p99 <= nginx's, %s conns" % n,
                        "met": None, "detail": "not measured"})
            continue
        rv, pv = r["ratios"]["eddy"]["of_medians"], p["ratios"]["eddy"]["of_medians"]
        clear = (r["ratios"]["eddy"]["per_round_min"] >= 1 or r["ratios"]["eddy"]["per_round_max"] < 1) and \
                (p["ratios"]["eddy"]["per_round_max"] <= 1 or p["ratios"]["eddy"]["per_round_min"] > 1)
        out.append({"goal": "keep-alive req/s >= nginx with p99 <= nginx's, %s conns" % n,
                    "met": rv >= 1 and pv <= 1, "clear": clear,
                    "detail": "req/s eddy/nginx %.2f (per round %.2f..%.2f), p99 eddy/nginx %.2f (per round %.2f..%.2f)"
                              % (rv, r["ratios"]["eddy"]["per_round_min"], r["ratios"]["eddy"]["per_round_max"],
                                 pv, p["ratios"]["eddy"]["per_round_min"], p["ratios"]["eddy"]["per_round_max"])})
    r = find(rows, "idle_req", "rss_bytes_per_conn")
    for server in ("eddy", "eddy-epoll"):
        text = "idle keep-alive <= 256 B user-space memory per connection" + \
               (" (epoll backend)" if server != "eddy" else "")
        if r and r["servers"].get(server):
            st = r["servers"][server]
            out.append({"goal": text, "met": st["median"] <= 256, "value": st["median"], "limit": 256,
                        "clear": st["max"] <= 256 or st["min"] > 256,
                        "detail": "%s %.0f B/conn (%.0f..%.0f), RSS growth after 1 request each"
                                  % (server, st["median"], st["min"], st["max"])})
        elif server == "eddy":
            out.append({"goal": text, "met": None, "detail": "not measured"})
    return out


def cell(st, fmt):
    if not st:
        return "-"
    if st["min"] == st["max"]:
        return fmt.format(st["median"])
    return "%s (%s..%s)" % (fmt.format(st["median"]), fmt.format(st["min"]), fmt.format(st["max"]))


def rcell(q):
    if not q:
        return "-"
    if "per_round_min" in q and q["per_round_min"] != q["per_round_max"]:
        return "%.2f (%.2f..%.2f, per round %.2f)" % (q["of_medians"], q["per_round_min"],
                                                     q["per_round_max"], q["per_round_median"])
    return "%.2f" % q["of_medians"]


def verdict(g):
    if g["met"] is None:
        return "not measured"
    v = "met" if g["met"] else "NOT met"
    return v if g.get("clear", True) else v + " (within noise)"


def table(servers, rows):
    others = [s for s in servers if s != "nginx"]
    ab = "eddy" in servers and "eddy-base" in servers
    head = ["figure"] + servers + ["%s/nginx" % s for s in others] + (["eddy/eddy-base"] if ab else [])
    body = []
    for r in rows:
        unit = " (%s)" % r["unit"] if r["unit"] else ""
        line = ["%s: %s%s" % (r["scenario_label"], r["label"], unit)]
        line += [cell(r["servers"].get(s), r["format"]) for s in servers]
        line += [rcell(r["ratios"].get(s)) for s in others]
        if ab:
            line.append(rcell(r.get("ratio_base")))
        body.append(line)
    return head, body


def echo_lines(echo):
    out = []
    for sz in echo["sizes"]:
        e, p = sz.get("eddy", {}), sz.get("epoll", {})
        out.append("%s B: eddy %s msgs/s at %.3f CPU-us/msg, epoll %s at %.3f; eddy/epoll msgs/s %.3f, "
                   "CPU/msg %.3f (paired per round: %.3f, %.3f)"
                   % (sz["size"], "{:,.0f}".format(e.get("msgs_per_s_median", 0)),
                      e.get("cpu_us_per_msg_median", 0), "{:,.0f}".format(p.get("msgs_per_s_median", 0)),
                      p.get("cpu_us_per_msg_median", 0), sz["ratio_msgs_per_s"], sz["ratio_cpu_per_msg"],
                      sz["paired_ratio_msgs_per_s"], sz["paired_ratio_cpu_per_msg"]))
    return out


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    raw, jpath, mpath = args[0], None, None
    i = 1
    while i < len(args):
        if args[i] == "--json":
            jpath = args[i + 1]
        elif args[i] == "--md":
            mpath = args[i + 1]
        else:
            sys.exit("report.py: unknown argument " + args[i])
        i += 2
    meta, runs, idle = load(raw)
    echo = None
    if os.path.exists(os.path.join(raw, "echo.json")):
        with open(os.path.join(raw, "echo.json")) as f:
            echo = json.load(f)
    servers, rows = build(meta, runs, idle)
    gl = goals(rows)
    head, body = table(servers, rows)
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda line: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                                 for i, c in enumerate(line))
    print(fmt(head))
    last = None
    for r, line in zip(rows, body):
        if last and r["scenario"] != last:
            print()
        last = r["scenario"]
        print(fmt(line))
    print()
    print("goals (eddy against nginx, ratios of medians; 'within noise': the per-round ratios straddle the line):")
    for g in gl:
        print("  %-8s %s: %s" % (verdict(g), g["goal"], g["detail"]))
    if echo:
        print()
        print("echo (eddy-echo against the epoll reference, %d connections; goal at 64 B: msgs/s >= 1.2x, CPU/msg <= 0.8x):"
              % echo["conns"])
        for line in echo_lines(echo):
            print("  " + line)
    print()
    print("machine: %s, %s CPUs, kernel %s; servers on CPU %s, wrk -t1 on CPU %s; %s s x %s rounds; "
          "load average %s at start, %s at end"
          % (meta.get("cpu_model"), meta.get("cpus"), meta.get("kernel"), meta.get("server_cpu"),
             meta.get("load_cpu"), meta.get("secs"), meta.get("rounds"), meta.get("loadavg_start"),
             meta.get("loadavg_end", "?")))
    if jpath:
        with open(jpath, "w") as f:
            json.dump({"meta": meta, "servers": servers,
                       "figures": [{k: v for k, v in r.items() if k != "format"} for r in rows],
                       "goals": gl, "echo": echo}, f, indent=1)
            f.write("\n")
    if mpath:
        with open(mpath, "w") as f:
            f.write("| " + " | ".join(head) + " |\n")
            f.write("|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|\n")
            for line in body:
                f.write("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |\n")
            f.write("\nGoals (eddy against nginx):\n\n")
            for g in gl:
                f.write("- **%s** — %s: %s\n" % (verdict(g), g["goal"], g["detail"]))
            if echo:
                f.write("\nEcho (eddy-echo against the epoll reference, %d connections):\n\n" % echo["conns"])
                for line in echo_lines(echo):
                    f.write("- " + line + "\n")
            f.write("\nMachine: %s, %s CPUs, %s GiB, kernel %s; nginx %s, wrk %s, node %s; eddy %s. "
                    "Servers pinned to CPU %s, wrk -t1 to CPU %s; %s s runs x %s rounds, interleaved; "
                    "%s idle connections. Load average %s at start, %s at end (%s).\n"
                    % (meta.get("cpu_model"), meta.get("cpus"), meta.get("mem_gib"), meta.get("kernel"),
                       meta.get("nginx"), meta.get("wrk"), meta.get("node"), meta.get("eddy"),
                       meta.get("server_cpu"), meta.get("load_cpu"), meta.get("secs"), meta.get("rounds"),
                       meta.get("idle_n"), meta.get("loadavg_start"), meta.get("loadavg_end", "?"),
                       meta.get("date")))


if __name__ == "__main__":
    main()
