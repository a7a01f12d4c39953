"""One table of every measured method on issue 13's protocol: normtweak's variants beside the peers.

    python benchmarks/accuracy_table.py                 # Wikipedia
    python benchmarks/accuracy_table.py --text austen

Reads finished runs only (it quantizes nothing): normtweak's from benchmarks/accuracy.py
(results/accuracy_runs/), the peers' from benchmarks/peers.py (results/peers_runs/) and
norm tweaking on the peers' checkpoints from benchmarks/tweak_imported.py
(results/tweak_imported_runs/), all on the same 128 x 512-token calibration windows of the train split (seed 0) and the
first 8 x 1024-token windows of the validation and test splits. Rows the issue's filer
measured on the same protocol but that were not re-run here (AutoRound with 50
iterations: hours per config on this CPU) come from results/issue13_reference.json and
are marked as such. Gap recovered (test) = (RTN - method) / (RTN - float), RTN = normtweak's
of the same config; "of GPTQ's gap" = (GPTQ - method) / (GPTQ - float), GPTQ = normtweak's
default GPTQ. Below it, the calibration-size study: every (config, method) measured with
more than one calibration size (accuracy.py's or peers.py's --calib-samples / --calib-len).
Prints Markdown and writes results/accuracy_table_<text>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from normtweak.evaluate.report import write_json

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = "c128x512s0_e8x1024"  # peers.py's run tag for the protocol accuracy.py runs too


def config_key(label: str) -> str:
    """'W4 g64', 'W4 g64 asym', 'W4 per-channel asym' -> 'W4 g64' / 'W4 per-channel'."""
    return label.replace(" asym", "").strip()


def gap(reference: float, method: float, floor: float) -> float:
    """Share of the reference's distance to the float model that `method` closes."""
    if not all(map(math.isfinite, (reference, method, floor))) or reference == floor:
        return float("nan")
    return (reference - method) / (reference - floor)


# Runs written before accuracy.py recorded its calibration were all made at its defaults.
DEFAULT_CALIB = {"samples": 128, "len": 512, "seed": 0}


def accuracy_rows(runs: Path, text: str, calib: dict = DEFAULT_CALIB,
                  max_windows: int = 8) -> list[dict]:
    """normtweak's runs on the protocol (`calib`, `max_windows`); others are left out."""
    rows = []
    for path in sorted(runs.glob(f"{text}_w*.json")):
        r = json.loads(path.read_text())
        if r.get("calib", DEFAULT_CALIB) != calib or r.get("max_windows", 8) != max_windows:
            continue
        rows.append({"config": config_key(r["config"]), "method": f"normtweak {r['variant']}",
                     "val": r["val"], "test": r["test"], "quantize_s": r["quantize_s"],
                     "peak_mb": r.get("peak_rss_gib", float("nan")) * 1024,
                     "source": _shown(path), "git": r.get("git")})
    return rows


def calibration_rows(runs: Path, text: str, max_windows: int = 8,
                     peers_runs: Path | None = None) -> list[dict]:
    """The calibration-size study: every (config, method) measured with more than one
    calibration size, normtweak's runs and (with `peers_runs`) the peers', smallest number of
    tokens first."""
    found = []
    for path in sorted(runs.glob(f"{text}_w*.json")):
        r = json.loads(path.read_text())
        if r.get("max_windows", 8) != max_windows:
            continue
        calib = r.get("calib", DEFAULT_CALIB)
        found.append((config_key(r["config"]), f"normtweak {r['variant']}", calib, r["val"],
                      r["test"], r["quantize_s"], path))
    if peers_runs is not None:
        for path in sorted(peers_runs.glob(f"{text}_*_c*_e{max_windows}x1024_t*.json")):
            m = re.search(r"_c(\d+)x(\d+)s(\d+)_e", path.name)  # peers.py's run tag
            r = json.loads(path.read_text())
            if m is None or r["method"] == "float" or r["method"].startswith("normtweak-"):
                continue
            calib = {"samples": int(m[1]), "len": int(m[2]), "seed": int(m[3])}
            found.append((config_key(r.get("config") or _peer_config(r)), r["method"], calib,
                          r["eval"]["validation"]["ppl"], r["eval"]["test"]["ppl"],
                          r["quantize_s"], path))
    groups: dict = {}
    for config, method, calib, val, test, seconds, path in found:
        groups.setdefault((config, method), []).append({
            "config": config, "method": method,
            "samples": calib["samples"], "len": calib["len"], "seed": calib["seed"],
            "tokens": calib["samples"] * calib["len"], "val": val, "test": test,
            "quantize_s": seconds, "source": _shown(path)})
    rows = [row for group in groups.values() if len({(g["samples"], g["len"]) for g in group}) > 1
            for row in group]
    return sorted(rows, key=lambda r: (r["config"], r["method"], r["tokens"], r["len"], r["seed"]))


def peer_rows(runs: Path, text: str) -> list[dict]:
    rows = []
    for path in sorted(runs.glob(f"{text}_*_{PROTOCOL}_t*.json")):
        r = json.loads(path.read_text())
        if r["method"] == "float":
            continue
        method = r["method"].replace("normtweak-", "normtweak ")
        rows.append({"config": config_key(r.get("config") or _peer_config(r)), "method": method,
                     "val": r["eval"]["validation"]["ppl"], "test": r["eval"]["test"]["ppl"],
                     "quantize_s": r["quantize_s"], "peak_mb": r.get("peak_rss_mb", float("nan")),
                     "source": _shown(path)})
    return rows


def imported_rows(runs: Path, text: str, calib: dict = DEFAULT_CALIB,
                  max_windows: int = 8) -> list[dict]:
    """Norm tweaking on a peer's checkpoint (benchmarks/tweak_imported.py) on the protocol:
    the checkpoint quantized from the protocol's windows, tweaked on them, scored as saved
    and read back. quantize_s is the tweak's time alone (the peer's is in its own row)."""
    rows = []
    tag = f"-{calib['samples']}x{calib['len']}"
    for path in sorted(runs.glob(f"{text}-*.json")):
        r = json.loads(path.read_text())
        if not r["checkpoint"].endswith(tag) or r.get("calib", calib) != calib \
                or r.get("max_windows", 8) != max_windows:
            continue
        peer, config = r["checkpoint"][len(text) + 1:-len(tag)].rsplit("-", 1)
        m = re.fullmatch(r"w(\d+)(?:pc|g(\d+))", config)  # peers.py's config_tag
        if m is None:
            continue
        label = f"W{m[1]} " + ("per-channel" if m[2] is None else f"g{m[2]}")
        rows.append({"config": label, "method": f"{peer} + normtweak {r['preset']} tweak "
                     "(imported)", "val": r["after"]["validation"], "test": r["after"]["test"],
                     "quantize_s": r["tweak_s"], "peak_mb": float("nan"), "source": _shown(path)})
    return rows


def _shown(path: Path) -> str:
    """The run's file, relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _peer_config(run: dict) -> str:
    a = run["args"]
    return f"W{a['bits']} " + ("per-channel" if a["group_size"] == -1 else f"g{a['group_size']}")


def table(text: str, accuracy_runs: Path, peers_runs: Path, reference: Path,
          imported_runs: Path | None = None) -> dict:
    floats = json.loads((accuracy_runs / f"{text}_float_8.json").read_text())
    rows = accuracy_rows(accuracy_runs, text)
    seen = {(r["config"], r["method"]) for r in rows}
    rows += [r for r in peer_rows(peers_runs, text) if (r["config"], r["method"]) not in seen]
    if imported_runs is not None:
        rows += imported_rows(imported_runs, text)
    if reference.exists():
        ref = json.loads(reference.read_text())
        if ref["text"] == text:
            rows += [{**r, "val": float("nan"), "quantize_s": float("nan"),
                      "peak_mb": float("nan"), "source": ref["source"]} for r in ref["rows"]]
    by = {(r["config"], r["method"]): r for r in rows}
    for r in rows:
        rtn = by.get((r["config"], "normtweak rtn"))
        gptq = by.get((r["config"], "normtweak gptq"))
        r["gap_rtn"] = gap(rtn["test"], r["test"], floats["test"]) if rtn else float("nan")
        r["gap_gptq"] = gap(gptq["test"], r["test"], floats["test"]) if gptq else float("nan")
    rows.sort(key=lambda r: (r["config"], -r["test"]))
    return {"text": text, "float": floats, "rows": rows,
            "calibration": calibration_rows(accuracy_runs, text, peers_runs=peers_runs)}


def markdown(result: dict) -> str:
    f = result["float"]
    out = [f"float: val {f['validation']:.2f}, test {f['test']:.2f}", "",
           "| config | method | val ppl | test ppl | gap recovered vs RTN % | of GPTQ's gap % "
           "| quantize s | peak MB |", "|---|---|---|---|---|---|---|---|"]

    def num(x, fmt):
        return "–" if not math.isfinite(x) else format(x, fmt)

    for r in result["rows"]:
        out.append(f"| {r['config']} | {r['method']} | {num(r['val'], '.2f')} | "
                   f"{r['test']:.2f} | {num(100 * r['gap_rtn'], '.0f')} | "
                   f"{num(100 * r['gap_gptq'], '.0f')} | {num(r['quantize_s'], '.0f')} | "
                   f"{num(r['peak_mb'], '.0f')} |")
    if result.get("calibration"):
        out += ["", "Calibration size (train windows, seed 0; the same evaluation):", "",
                "| config | method | samples x tokens | seed | val ppl | test ppl | quantize s |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {r['config']} | {r['method']} | {r['samples']} x {r['len']} | {r['seed']} | "
                f"{r['val']:.2f} | {r['test']:.2f} | {num(r['quantize_s'], '.0f')} |"
                for r in result["calibration"]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", default="wikipedia")
    p.add_argument("--accuracy-runs", default=str(ROOT / "results" / "accuracy_runs"))
    p.add_argument("--peers-runs", default=str(ROOT / "results" / "peers_runs"))
    p.add_argument("--reference", default=str(ROOT / "results" / "issue13_reference.json"))
    p.add_argument("--imported-runs", default=str(ROOT / "results" / "tweak_imported_runs"))
    p.add_argument("--output", default=None, help="default results/accuracy_table_<text>.json")
    args = p.parse_args(argv)
    result = table(args.text, Path(args.accuracy_runs), Path(args.peers_runs),
                   Path(args.reference), Path(args.imported_runs))
    print(markdown(result))
    write_json(args.output or ROOT / "results" / f"accuracy_table_{args.text}.json", result)
    return result


if __name__ == "__main__":
    main()
