#!/usr/bin/python3
# Result handling for bench/pools: turns fio JSON output into one record per
# run (`record`), and the records of a whole run into the isolation and QoS
# tables with their ratios and the raw JSON file (`report`). Standard
# library only.
import argparse
import json
import statistics
import sys

from nbd_report import load_fio_json, record_fio  # beside this file

ISO_TARGET = 0.90   # fast tap with a loaded slow neighbour / alone
QOS_TOL = 0.10      # measured / limit within 1 +- this
NOISY_SPREAD = 0.20  # pairs whose ratios span more than this


def fio_sum(doc):
    """Sum of all jobs of one fio run: a pool limit is shared by two taps,
    each driven by its own job."""
    out = {"iops": 0.0, "bw_bytes": 0.0, "io_bytes": 0, "jobs": []}
    for job in doc["jobs"]:
        if job.get("error"):
            raise ValueError("fio job %s: error %d" % (job.get("jobname"), job["error"]))
        rd, wr = job["read"], job["write"]
        j = {"name": job.get("jobname"),
             "iops": rd["iops"] + wr["iops"],
             "bw_bytes": rd["bw_bytes"] + wr["bw_bytes"],
             "io_bytes": rd["io_bytes"] + wr["io_bytes"]}
        out["jobs"].append(j)
        for k in ("iops", "bw_bytes", "io_bytes"):
            out[k] += j[k]
    if not out["jobs"]:
        raise ValueError("fio output has no job")
    return out


def cmd_record(a):
    rec = {"section": a.section, "case": a.case, "mode": a.mode,
           "repeat": a.repeat}
    if a.limit_kind:
        rec["limit_kind"] = a.limit_kind
        rec["limit"] = a.limit
    record_fio(rec, fio_sum, a.fio_json, a.exit_status)
    if a.slow_json:
        # The neighbour's load: proof that the slow tap was busy.
        try:
            slow = fio_sum(load_fio_json(a.slow_json))
            rec["slow_iops"] = slow["iops"]
            rec["slow_bw_bytes"] = slow["bw_bytes"]
        except (OSError, ValueError, KeyError, IndexError) as e:
            rec["ok"] = False
            rec.setdefault("error", "slow tap's fio: %s" % e)
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    tag = "[%s] %-26s %-6s #%d" % (a.section, a.case, a.mode, a.repeat)
    if rec["ok"]:
        extra = ""
        if "slow_iops" in rec:
            extra = "  (slow tap %.0f IOPS)" % rec["slow_iops"]
        print("%s %9.0f IOPS %8.1f MB/s%s" % (tag, rec["iops"], rec["bw_bytes"] / 1e6, extra),
              file=sys.stderr)
    else:
        print("%s FAILED: %s" % (tag, rec.get("error")), file=sys.stderr)
    return 0 if rec["ok"] else 1


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ordered(runs, section):
    seen = []
    for r in runs:
        if r["section"] == section and r["case"] not in seen:
            seen.append(r["case"])
    return seen


def summarise_isolation(runs):
    """Per case: medians of alone and loaded, and the median of the ratios
    of the runs paired by repeat (adjacent in time, so drift in the
    machine's load cancels within a pair)."""
    rows = []
    for case in ordered(runs, "isolation"):
        rs = [r for r in runs if r["section"] == "isolation" and r["case"] == case]
        alone = {r["repeat"]: r for r in rs if r["mode"] == "alone" and r["ok"]}
        loaded = {r["repeat"]: r for r in rs if r["mode"] == "loaded" and r["ok"]}
        pairs = sorted(set(alone) & set(loaded))
        ratios = [loaded[i]["iops"] / alone[i]["iops"] for i in pairs if alone[i]["iops"]]
        layout, job = case.split("/", 1)
        row = {
            "case": case, "layout": layout, "job": job,
            "alone_iops": median([alone[i]["iops"] for i in alone]),
            "alone_bw_bytes": median([alone[i]["bw_bytes"] for i in alone]),
            "loaded_iops": median([loaded[i]["iops"] for i in loaded]),
            "loaded_bw_bytes": median([loaded[i]["bw_bytes"] for i in loaded]),
            "slow_iops": median([loaded[i].get("slow_iops") for i in loaded]),
            "ratios": ratios,
            "ratio": median(ratios),
            "failed": len(rs) - len(alone) - len(loaded),
        }
        if layout == "separate":
            row["target"] = ">= %.2f" % ISO_TARGET
            row["met"] = row["ratio"] is not None and row["ratio"] >= ISO_TARGET
        elif layout == "control":
            row["target"] = "control"
            row["met"] = None
        else:
            row["target"] = "contrast"
            row["met"] = None
        rows.append(row)
    return rows


def summarise_qos(runs):
    rows = []
    for case in ordered(runs, "qos"):
        rs = [r for r in runs if r["section"] == "qos" and r["case"] == case]
        ok = [r for r in rs if r["ok"]]
        kind = rs[0].get("limit_kind")
        limit = rs[0].get("limit")
        key = "iops" if kind == "iops" else "bw_bytes"
        measured = median([r[key] for r in ok])
        ratio = measured / limit if measured is not None and limit else None
        scope, _, job = case.partition(":")
        rows.append({
            "case": case, "scope": scope.split("-")[0], "job": job,
            "limit_kind": kind, "limit": limit,
            "measured": measured, "ratio": ratio,
            "ratios": [r[key] / limit for r in ok] if limit else [],
            "per_tap": [[j[key] for j in r["jobs"]] for r in ok],
            "target": "%.2f..%.2f" % (1 - QOS_TOL, 1 + QOS_TOL),
            "met": ratio is not None and abs(ratio - 1) <= QOS_TOL,
            "failed": len(rs) - len(ok),
        })
    return rows


def fmt(x, spec):
    return "-" if x is None else spec % x


def spread(ratios):
    """The pairs' range: how far apart single pairs were (machine noise)."""
    if len(ratios) < 2:
        return "-"
    return "%.2f..%.2f" % (min(ratios), max(ratios))


def verdict(row):
    if row["failed"] and row["ratio"] is None:
        return "FAILED"
    if row["met"] is None:
        return "-"
    v = "met" if row["met"] else "NOT MET"
    # Pairs far apart: the machine's noise is bigger than the effect.
    r = row.get("ratios") or []
    if len(r) > 1 and max(r) - min(r) > NOISY_SPREAD:
        v += " (noisy)"
    return v


def print_tables(doc):
    meta = doc["meta"]
    iso = doc["isolation"]
    if iso:
        print("Isolation: fast tap (nbdkit memory) next to a slow tap (nbdkit memory "
              "+ delay %s); pools of %s each, or one shared pool of %s" % (
                  meta.get("delay", "?"), meta.get("pool_size_human", "?"),
                  meta.get("pool_size_human", "?")))
        print("fast tap alone, then while the slow tap runs %s; ratio = with load / alone"
              % meta.get("slow_load", "?"))
        print("(control: the same load straight on the slow remote, not through tapd; "
              "ratio = median of %s paired runs)" % meta.get("repeat", "?"))
        hdr = ("case", "alone IOPS", "alone MB/s", "loaded IOPS", "loaded MB/s",
               "slow IOPS", "ratio", "pairs min..max", "target", "verdict")
        lines = [hdr]
        for r in iso:
            lines.append((
                r["case"], fmt(r["alone_iops"], "%.0f"), fmt(r["alone_bw_bytes"] and
                                                             r["alone_bw_bytes"] / 1e6, "%.1f"),
                fmt(r["loaded_iops"], "%.0f"), fmt(r["loaded_bw_bytes"] and
                                                   r["loaded_bw_bytes"] / 1e6, "%.1f"),
                fmt(r["slow_iops"], "%.0f"), fmt(r["ratio"], "%.2fx"), spread(r["ratios"]),
                r["target"], verdict(r)))
        table(lines)
        print()
    qos = doc["qos"]
    if qos:
        print("QoS: fio at depth %s against limited taps (ram: filled first, or null: "
              "for the hole row); ratio = measured / limit" % meta.get("qos_depth", "?"))
        hdr = ("case", "limit", "measured", "per tap", "ratio", "target", "verdict")
        lines = [hdr]
        for r in qos:
            if r["limit_kind"] == "iops":
                lim, unit, div = "%d IOPS" % r["limit"], "IOPS", 1
            else:
                lim, unit, div = "%.1f MB/s" % (r["limit"] / 1e6), "MB/s", 1e6
            per = "-"
            if r["per_tap"] and len(r["per_tap"][0]) > 1:
                # Of the median run's taps, to show the limit was shared.
                mid = sorted(r["per_tap"], key=sum)[len(r["per_tap"]) // 2]
                per = "+".join("%.0f" % (x / div) for x in mid)
            lines.append((r["case"], lim,
                          fmt(r["measured"] and r["measured"] / div, "%.1f " + unit),
                          per, fmt(r["ratio"], "%.3fx"), r["target"], verdict(r)))
        table(lines)
        print()
    print("%s, %s, kernel %s, %s CPUs; %s s per run (+%s s ramp), %s repeat(s); "
          "load %s -> %s" % (meta.get("date"), meta.get("host"), meta.get("kernel"),
                             meta.get("cpus"), meta.get("runtime"), meta.get("ramp"),
                             meta.get("repeat"), meta.get("loadavg_start"),
                             meta.get("loadavg_end")))


def table(lines):
    w = [max(len(str(l[i])) for l in lines) for i in range(len(lines[0]))]
    for n, l in enumerate(lines):
        print("  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i])
                        for i, c in enumerate(l)).rstrip())
        if n == 0:
            print("  ".join("-" * x for x in w))


def cmd_report(a):
    if a.from_json:
        with open(a.from_json, encoding="utf-8") as f:
            doc = json.load(f)
        print_tables(doc)
        return 0
    runs = []
    with open(a.runs, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    meta = {}
    for m in a.meta or []:
        k, _, v = m.partition("=")
        meta[k] = v
    doc = {"meta": meta, "isolation": summarise_isolation(runs),
           "qos": summarise_qos(runs), "runs": runs}
    print_tables(doc)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    failed = sum(1 for r in runs if not r["ok"])
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="append one run's record")
    r.add_argument("--out", required=True)
    r.add_argument("--section", required=True, choices=("isolation", "qos"))
    r.add_argument("--case", required=True)
    r.add_argument("--mode", required=True)
    r.add_argument("--repeat", type=int, default=1)
    r.add_argument("--fio-json", required=True)
    r.add_argument("--slow-json")
    r.add_argument("--exit-status", type=int, default=0)
    r.add_argument("--limit-kind", choices=("iops", "bps"))
    r.add_argument("--limit", type=int)
    r.set_defaults(fn=cmd_record)
    s = sub.add_parser("report", help="print the tables (and write --json)")
    s.add_argument("--runs")
    s.add_argument("--meta", action="append")
    s.add_argument("--json")
    s.add_argument("--from-json", help="reprint a saved --json file")
    s.set_defaults(fn=cmd_report)
    a = p.parse_args()
    if a.cmd == "report" and not a.runs and not a.from_json:
        p.error("report needs --runs or --from-json")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
