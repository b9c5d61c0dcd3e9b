#!/usr/bin/python3
# Result handling for bench/nbd: turns one fio JSON output plus the server's
# CPU ticks into a record (`record`), and the records of a whole run into the
# per-backing tables and the raw JSON file (`report`). Standard library only.
import argparse
import json
import os
import statistics
import sys

JOB_ORDER = ["randread-4k", "randwrite-4k", "randread-64k",
             "seqread-1m", "seqwrite-1m", "randread-4k-4conn",
             "vhd-alloc-4k", "vhd-randwrite-4k", "vhd-randread-4k"]
SERVER_ORDER = ["tapd", "qemu-nbd", "nbdkit"]
PEERS = ["qemu-nbd", "nbdkit"]
GIB = 1 << 30


def load_fio_json(path):
    """fio may print notes before its JSON even with --output: skip them."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in fio output")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def fio_metrics(doc):
    job = doc["jobs"][0]
    if job.get("error"):
        raise ValueError("fio job error %d" % job["error"])
    rd, wr = job["read"], job["write"]
    main = rd if rd["io_bytes"] >= wr["io_bytes"] else wr
    pct = main.get("clat_ns", {}).get("percentile", {})
    p99 = pct.get("99.000000")
    return {
        "iops": rd["iops"] + wr["iops"],
        "bw_bytes": rd["bw_bytes"] + wr["bw_bytes"],
        "io_bytes": rd["io_bytes"] + wr["io_bytes"],
        "p99_us": p99 / 1000.0 if p99 is not None else None,
        "runtime_ms": max(rd["runtime"], wr["runtime"]),
    }


def record_fio(rec, metrics, fio_json, exit_status):
    """Fill rec from fio's JSON output through metrics(doc): ok when fio
    exited 0 and moved bytes, else an error saying why."""
    rec["ok"] = False
    try:
        rec.update(metrics(load_fio_json(fio_json)))
        rec["ok"] = rec["io_bytes"] > 0
        if not rec["ok"]:
            rec["error"] = "no I/O done"
    except (OSError, ValueError, KeyError, IndexError) as e:
        rec["error"] = str(e)
    if exit_status:
        rec["ok"] = False
        rec.setdefault("error", "fio exited %d" % exit_status)


def cmd_record(a):
    rec = {"backing": a.backing, "job": a.job, "server": a.server,
           "repeat": a.repeat}
    record_fio(rec, fio_metrics, a.fio_json, a.exit_status)
    if a.cpu_ticks is not None and a.cpu_ticks >= 0:
        rec["cpu_s"] = a.cpu_ticks / a.clk_tck
        if rec.get("io_bytes"):
            rec["cpu_s_per_gib"] = rec["cpu_s"] / (rec["io_bytes"] / GIB)
    if a.o_direct:
        rec["o_direct"] = a.o_direct
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    tag = "[%s] %-18s %-9s" % (a.backing, a.job, a.server)
    if rec["ok"]:
        cpu = rec.get("cpu_s_per_gib")
        print("%s %9.0f IOPS %8.1f MB/s  p99 %8.0f us  CPU %s s/GiB" % (
            tag, rec["iops"], rec["bw_bytes"] / 1e6, rec["p99_us"] or 0,
            "%.3f" % cpu if cpu is not None else "-"), file=sys.stderr)
    else:
        print("%s FAILED: %s" % (tag, rec.get("error")), file=sys.stderr)
    return 0 if rec["ok"] else 1


def summarise(runs):
    """Median over repeats for rates and latency; CPU pooled (sum/sum)."""
    groups = {}
    for r in runs:
        groups.setdefault((r["backing"], r["job"], r["server"]), []).append(r)
    out = {}
    for (backing, job, server), rs in groups.items():
        ok = [r for r in rs if r["ok"]]
        s = {"runs": len(rs), "failed": len(rs) - len(ok)}
        if ok:
            s["iops"] = statistics.median(r["iops"] for r in ok)
            s["mb_s"] = statistics.median(r["bw_bytes"] for r in ok) / 1e6
            p99 = [r["p99_us"] for r in ok if r.get("p99_us") is not None]
            s["p99_us"] = statistics.median(p99) if p99 else None
            cpu = [r for r in ok if "cpu_s" in r]
            if cpu:
                gib = sum(r["io_bytes"] for r in cpu) / GIB
                s["cpu_s_per_gib"] = sum(r["cpu_s"] for r in cpu) / gib
        out.setdefault(backing, {}).setdefault(job, {})[server] = s
    # Ratios of tapd to the best peer: higher is better for IOPS and MB/s,
    # lower is better for p99 and CPU, so "best" is max or min accordingly.
    for backing, jobs in out.items():
        for job, servers in jobs.items():
            t = servers.get("tapd", {})
            ratios = {}
            for key, best in (("iops", max), ("mb_s", max),
                              ("p99_us", min), ("cpu_s_per_gib", min)):
                peers = [servers[p][key] for p in PEERS
                         if servers.get(p, {}).get(key) is not None]
                if t.get(key) is not None and peers and best(peers) > 0:
                    ratios[key] = t[key] / best(peers)
            d = servers.get("direct", {})
            if t.get("iops") and d.get("iops"):
                ratios["iops_vs_direct"] = t["iops"] / d["iops"]
            servers["tapd_vs_best_peer"] = ratios
    return out


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(backing, jobs, meta, servers, runs):
    cols = [("IOPS", "iops", ".0f", 8), ("MB/s", "mb_s", ".1f", 8),
            ("p99us", "p99_us", ".0f", 7), ("CPU-s/GiB", "cpu_s_per_gib", ".3f", 9)]
    group_w = sum(c[3] + 1 for c in cols)
    ratio_keys = [("IOPS", "iops"), ("MB/s", "mb_s"), ("p99", "p99_us"),
                  ("CPU", "cpu_s_per_gib")]
    has_direct = any("direct" in s for s in jobs.values())
    title = "%s backing: %s image, %s s per run (+%s s ramp), %d repeat(s)" % (
        backing, meta.get("size_human", "?"), meta.get("runtime"),
        meta.get("ramp"), meta.get("repeat", 1))
    if backing == "vhd":
        title = ("vhd backing (tmpfs): fresh %s dynamic VHD per server and repeat; "
                 "alloc: one 4k write per 2 MiB block (not timed), then %s s "
                 "runs over the first %s (+%s s ramp), %d repeat(s)" % (
                     meta.get("vhd_size_human", "?"), meta.get("runtime"),
                     meta.get("size_human", "?"), meta.get("ramp"),
                     meta.get("repeat", 1)))
    print()
    print(title)
    line1 = "%-18s" % ""
    line2 = "%-18s" % "job"
    for srv in servers:
        line1 += " |" + srv.center(group_w - 1)
        line2 += " |" + "".join(" %*s" % (c[3], c[0]) for c in cols)[1:]
    line1 += " | tapd / best peer" + ("        " if has_direct else "")
    line2 += " |" + "".join(" %7s" % k for k, _ in ratio_keys)[1:]
    if has_direct:
        line2 += " tapd/fio"
    print(line1.rstrip())
    print(line2.rstrip())
    for job in JOB_ORDER:
        if job not in jobs:
            continue
        row = "%-18s" % job
        for srv in servers:
            s = jobs[job].get(srv)
            if s is None:
                cells = ["-" for _ in cols]
            elif "iops" not in s:
                cells = ["FAIL"] + ["-" for _ in cols[1:]]
            else:
                cells = [fmt(s.get(c[1]), c[2]) for c in cols]
            row += " |" + "".join(" %*s" % (c[3], v)
                                  for c, v in zip(cols, cells))[1:]
        r = jobs[job].get("tapd_vs_best_peer", {})
        row += " |" + "".join(" %7s" % (fmt(r.get(k), ".2f") + "x"
                                        if r.get(k) is not None else "-")
                              for _, k in ratio_keys)[1:]
        if has_direct:
            v = r.get("iops_vs_direct")
            row += " %8s" % (fmt(v, ".2f") + "x" if v is not None else "")
        print(row.rstrip())
    for job in JOB_ORDER:
        d = jobs.get(job, {}).get("direct")
        if d and "iops" in d:
            print("ceiling: fio directly on the file (libaio, O_DIRECT), %s: "
                  "%.0f IOPS, %.1f MB/s, p99 %s us" % (
                      job, d["iops"], d["mb_s"], fmt(d.get("p99_us"), ".0f")))
    odirect = {}
    for r in runs:
        if r["backing"] == backing and r.get("o_direct") not in (None, "closed"):
            odirect.setdefault(r["server"], r["o_direct"])
    if odirect:
        print("image opened with O_DIRECT (seen in /proc/PID/fdinfo): " +
              ", ".join("%s %s" % (s, odirect[s]) for s in servers + ["direct"]
                        if s in odirect))
    notes = meta.get("notes", {}).get(backing)
    for n in notes or []:
        print("note: " + n)


def cmd_report(a):
    runs = []
    if a.from_json:
        # Re-render a saved result (e.g. for bench/README.md).
        doc = json.load(open(a.from_json, encoding="utf-8"))
        runs, meta = doc["runs"], doc["meta"]
    elif os.path.exists(a.runs):
        with open(a.runs, encoding="utf-8") as f:
            runs = [json.loads(line) for line in f if line.strip()]
    if not a.from_json:
        meta = {"notes": {}, "versions": {}}
    for kv in a.meta:
        key, _, val = kv.partition("=")
        if key.startswith("version."):
            meta["versions"][key[8:]] = val
        elif key.startswith("note."):
            meta["notes"].setdefault(key[5:], []).append(val)
        elif key in ("servers", "backings", "jobs"):
            meta[key] = [v for v in val.split(",") if v]
        elif key in ("size", "vhd_size", "runtime", "ramp", "repeat", "cpus",
                     "clk_tck"):
            meta[key] = int(val)
        else:
            meta[key] = val
    summary = summarise(runs)
    servers = [s for s in SERVER_ORDER if s in meta.get("servers", SERVER_ORDER)]
    print("tapd vs qemu-nbd vs nbdkit over NBD (fio %s); CPU-s/GiB = server "
          "CPU seconds (user+sys, all threads) per GiB moved" %
          meta.get("versions", {}).get("fio", "?"))
    for backing in ("disk", "tmpfs", "vhd"):
        if backing in summary:
            print_table(backing, summary[backing], meta, servers, runs)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "summary": summary, "runs": runs}, f,
                      indent=1, sort_keys=True)
            f.write("\n")
    failed = sum(1 for r in runs if not r["ok"])
    if failed:
        print("\n%d run(s) failed; see the messages above" % failed)
    return 1 if failed or not runs else 0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("--backing", required=True)
    r.add_argument("--job", required=True)
    r.add_argument("--server", required=True)
    r.add_argument("--repeat", type=int, default=1)
    r.add_argument("--fio-json", required=True)
    r.add_argument("--exit-status", type=int, default=0)
    r.add_argument("--cpu-ticks", type=int)
    r.add_argument("--clk-tck", type=int, default=100)
    r.add_argument("--o-direct")
    s = sub.add_parser("report")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--runs", help="records written by `record`")
    g.add_argument("--from-json", help="a JSON file written by --json before")
    s.add_argument("--meta", action="append", default=[],
                   help="KEY=VALUE; version.X=, note.BACKING= for notes")
    s.add_argument("--json")
    a = p.parse_args()
    return cmd_record(a) if a.cmd == "record" else cmd_report(a)


if __name__ == "__main__":
    sys.exit(main())
