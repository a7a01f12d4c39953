"""The results pages, generated from results/*.json (never edited by hand).

    python scripts/results_pages.py           # docs/results.md, docs/results-history.md,
                                              # docs/img/*.png and the README's result blocks
    python scripts/results_pages.py --check   # exit 1 if any of them is out of date

docs/results.md holds the current protocol (normtweak 0.2: W4A16 defaults, per-document
perplexity); docs/results-history.md the tables measured before it (asymmetric defaults,
documents joined into one stream), each with the command and JSON it came from. The README
carries generated blocks between `<!-- results:NAME:start/end -->` markers: the main job's
table, the headline table without the rows on GPTQ's grid, and the verdict as a table (its
sentences, seed by seed, are in docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
DOCS = ROOT / "docs"
IMG = DOCS / "img"
PEERS_RUNS = RESULTS / "peers_runs"

# (label in the tables, method name in the run files); the order of the rows
METHODS = [
    ("normtweak default (joint, W4A16 recipe)", "normtweak-default"),
    ("normtweak joint, equal compute (208 steps)", "normtweak-joint-equal-compute"),
    ("normtweak joint, bf16 training steps", "normtweak-default-bf16"),
    ("normtweak joint, norms frozen", "normtweak-joint-frozen-norms"),
    ("AutoRound-200 (its default recipe)", "autoround-200"),
    ("AutoRound fast (200 iters, batch 4)", "autoround-fast"),
    ("AutoRound-50 (light)", "autoround-50"),
    ("llm-compressor GPTQ", "llmc-gptq"),
    ("GPTQ (normtweak)", "normtweak-gptq"),
    ("RTN", "normtweak-rtn"),
    # symmetric configs: the same variants on GPTQ's grid (--no-full-range), the symmetric
    # default before normtweak 0.2 switched to the full-range grid
    ("normtweak joint, GPTQ grid (the default before the switch)", "normtweak-default-gptqgrid"),
    ("normtweak joint, equal compute, GPTQ grid", "normtweak-joint-equal-compute-gptqgrid"),
    ("normtweak joint, bf16 training steps, GPTQ grid", "normtweak-default-bf16-gptqgrid"),
    ("normtweak joint, norms frozen, GPTQ grid", "normtweak-joint-frozen-norms-gptqgrid"),
    ("RTN, GPTQ grid", "normtweak-rtn-gptqgrid"),
]
CONFIGS = ["W4 g64 sym", "W3 g64 sym", "W4 per-channel sym", "W4 g64 asym", "W3 g64 asym",
           "W4 per-channel asym"]


# --- reading the runs ------------------------------------------------------------------------


def pd_runs(text: str = "wikipedia") -> list[dict]:
    """Every run of the current protocol (per-document perplexity: 'pd' in the file name)."""
    runs = []
    for path in sorted(PEERS_RUNS.glob(f"*_{text}_*pd_t*.json")):
        run = json.loads(path.read_text())
        run["_file"] = path.relative_to(ROOT).as_posix()
        parts = path.stem.split("_")
        run["_method"] = parts[2]
        run["_seed"] = int(parts[4].split("s")[-1])
        if run["_method"] != "float":
            run.setdefault("config", config_label(parts[3]))  # the peers' runs do not record it
        runs.append(run)
    return runs


def config_label(tag: str) -> str:
    """'w4g64sym' -> 'W4 g64 sym', 'w4pcsym' -> 'W4 per-channel sym' (as the runs record it)."""
    import re

    m = re.fullmatch(r"w(\d+)(g(\d+)|pc)(sym|asym)?", tag)
    if not m:
        raise ValueError(f"cannot read a config from {tag!r}")
    group = f"g{m.group(3)}" if m.group(3) else "per-channel"
    return f"W{m.group(1)} {group} {m.group(4) or 'asym'}"


def ppl(run: dict, split: str) -> float:
    return run["eval"][split]["ppl"]


def cpu_s(run: dict) -> float:
    """The CPU seconds a run took to quantize (its wall seconds where it recorded no CPU time);
    NaN where it recorded neither, or was resumed from checkpoints (its times cover its last
    process only)."""
    if run.get("resumed_blocks"):
        return math.nan
    return run.get("quantize_cpu_s") or run.get("quantize_s") or math.nan


def one_machine(*groups: list[dict]) -> bool:
    """Whether every run of the groups recorded the same CPU (runs before the CPU was recorded
    count as one earlier machine): CPU seconds compare only then."""
    return len({json.dumps(r.get("cpu"), sort_keys=True) for g in groups for r in g}) <= 1


def mean_finite(values) -> float:
    """The mean of the finite values; NaN when there is none."""
    values = [v for v in values if math.isfinite(v)]
    return statistics.fmean(values) if values else math.nan


def spread(values: list[float]) -> str:
    """'21.34' (one seed) or '21.34 ± 0.12 (3)': mean ± half the range, number of seeds."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    half = (max(values) - min(values)) / 2
    return f"{statistics.fmean(values):.2f} ± {half:.2f} ({len(values)})"


def grouped(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(config label, method) -> its runs over seeds."""
    out: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        if run["_method"] == "float":
            continue
        out.setdefault((run["config"], run["_method"]), []).append(run)
    return out


def floats(runs: list[dict]) -> dict[int, dict]:
    return {r["_seed"]: r for r in runs if r["_method"] == "float"}


def gap_recovered(f: float, rtn: float, x: float) -> float:
    return (rtn - x) / (rtn - f) * 100 if rtn != f else math.nan


# --- the current protocol ------------------------------------------------------------------


def verdict(runs: list[dict], ours: str = "normtweak-default", theirs: str = "autoround-200",
            austen: list[dict] | None = None) -> str:
    """Per config where both were measured: who is ahead on validation and on test (means over
    seeds), by how much, beside the larger half-range over seeds; a lead smaller than that
    spread (or with one seed on both sides) is not called a win. Then the same comparison seed
    by seed (both methods fed the same calibration ids), where both ran that seed. The
    equal-compute variant gets the same comparison; then the variants' effects and what the
    comparison still lacks (`austen`: the Austen runs, None to read them)."""
    groups = grouped(runs)
    austen = pd_runs("austen") if austen is None else austen
    lines = head_to_head(groups, ours, theirs)
    if not lines:
        return "_AutoRound-200 not measured yet_" + missing(groups, (ours, theirs), austen)
    text = "normtweak's default against AutoRound-200 (lower is better):\n\n" + "\n".join(lines)
    equal = head_to_head(groups, EQUAL_COMPUTE, theirs)
    if equal:
        text += ("\n\nnormtweak's equal-compute variant (AutoRound-200's steps x batch) against "
                 "AutoRound-200:\n\n" + "\n".join(equal))
    austen_lines = head_to_head(grouped(austen), ours, theirs)
    if austen_lines:
        text += ("\n\nThe same comparison on the Austen text (`--text austen`: calibrated and "
                 "evaluated on Jane Austen's novels):\n\n" + "\n".join(austen_lines))
    before = [(GPTQ_GRID_DEFAULT, "Wikipedia", groups), (GPTQ_GRID_DEFAULT, "Austen", grouped(austen)),
              (EQUAL_COMPUTE + GPTQ_GRID, "Wikipedia, the equal-compute variant", groups)]
    for method, where, g in before:
        lines = head_to_head(g, method, theirs)
        if lines:
            text += (f"\n\nBefore the switch to the full-range grid, on GPTQ's symmetric grid "
                     f"(`--no-full-range`; {where}):\n\n" + "\n".join(lines))
    return (text + "".join(variant_effect(groups, *v) for v in VARIANT_EFFECTS)
            + missing(groups, (ours, theirs), austen))


EQUAL_COMPUTE = "normtweak-joint-equal-compute"
GPTQ_GRID = "-gptqgrid"  # a variant on GPTQ's symmetric grid (benchmarks/peers.py's twins)
GPTQ_GRID_DEFAULT = "normtweak-default" + GPTQ_GRID


def head_to_head(groups: dict, ours: str, theirs: str) -> list[str]:
    """One line per config where both methods ran (see verdict)."""
    lines = []
    for config in CONFIGS:
        a, b = groups.get((config, ours)), groups.get((config, theirs))
        if not a or not b:
            continue
        parts = []
        for split, name in (("validation", "validation"), ("test", "test")):
            va, vb = ([ppl(r, split) for r in g] for g in (a, b))
            ma, mb = statistics.fmean(va), statistics.fmean(vb)
            lead = "normtweak ahead" if ma < mb else "AutoRound-200 ahead"
            sure = seed_note(abs(ma - mb), {"normtweak": va, "AutoRound-200": vb})
            parts.append(f"{name} {ma:.2f} vs {mb:.2f}, {lead} by {abs(ma - mb):.2f} ({sure})")
        cpu = [mean_finite(cpu_s(r) for r in g) for g in (a, b)]
        if not one_machine(a, b):
            cost = "; CPU time not compared (the runs span machines)."
        elif all(map(math.isfinite, cpu)):
            cost = f"; CPU time {cpu[0] / cpu[1]:.0%} of AutoRound-200's."
        else:
            cost = "."
        line = f"- **{config}** (seeds {len(a)} vs {len(b)}): " + "; ".join(parts) + cost
        paired = same_seed_differences(a, b)
        if paired:
            line += (" Seed by seed, normtweak minus AutoRound-200 (validation / test; negative: "
                     "normtweak better): " + ", ".join(paired) + ".")
        lines.append(line)
    return lines


def half_spread(*groups: list[float]) -> float | None:
    """The larger half-range over seeds of the groups with several seeds; None when none has."""
    halves = [(max(v) - min(v)) / 2 for v in groups if len(v) > 1]
    return max(halves) if halves else None


def call(diff: float, half: float | None, seeds: tuple[int, int]) -> str:
    """The word for normtweak minus AutoRound-200 on test (negative: normtweak better): 'win'
    only ahead by more than the seed spread with SEEDS_WANTED seeds on both sides."""
    if half is None:
        return "ahead, one seed each" if diff < 0 else "behind, one seed each"
    if abs(diff) <= half:
        return "level (within the spread)"
    if diff > 0:
        return "**behind**"
    if min(seeds) >= SEEDS_WANTED:
        return "**win**"
    return f"ahead ({min(seeds)} seed{'s' * (min(seeds) > 1)}; {SEEDS_WANTED} are the bar)"


def verdict_table(runs: list[dict], austen: list[dict] | None = None) -> str:
    """The README's short form of the verdict: one row per comparison with AutoRound-200 (the
    default, the equal-compute variant, the default on the Austen text), the means over seeds,
    normtweak minus AutoRound-200 beside the larger seed spread, and the word for the test
    split, where the target is set (the full sentences, seed by seed: docs/results.md)."""
    groups = grouped(runs)
    austen_groups = grouped(pd_runs("austen") if austen is None else austen)
    rows = []
    for name, g, ours in (("default", groups, "normtweak-default"),
                          ("equal compute", groups, EQUAL_COMPUTE),
                          ("default, Austen text", austen_groups, "normtweak-default")):
        for config in CONFIGS:
            a, b = g.get((config, ours)), g.get((config, "autoround-200"))
            if not a or not b:
                continue
            cells = []
            for split in ("validation", "test"):
                va, vb = ([ppl(r, split) for r in x] for x in (a, b))
                diff, half = statistics.fmean(va) - statistics.fmean(vb), half_spread(va, vb)
                cells.append((statistics.fmean(va), statistics.fmean(vb), diff, half))
            (nv, av, dv, hv), (nt, at, dt, ht) = cells
            sp = lambda h: f" (±{h:.2f})" if h is not None else ""  # noqa: E731
            rows.append(f"| {config} | {name} | {len(a)} / {len(b)} | {nv:.2f} / {nt:.2f} | "
                        f"{av:.2f} / {at:.2f} | {dv:+.2f}{sp(hv)} | {dt:+.2f}{sp(ht)} | "
                        f"{call(dt, ht, (len(a), len(b)))} |")
    if not rows:
        return "_AutoRound-200 not measured yet._"
    return ("| config | normtweak | seeds (normtweak / AutoRound-200) | normtweak val / test | "
            "AutoRound-200 val / test | val difference (spread) | test difference (spread) | "
            "on test |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def seed_note(lead: float, values: dict[str, list[float]]) -> str:
    """Whether a lead is more than the seed spread (half the range) of the methods with
    several seeds; names whose spread it is when one method has a single seed."""
    several = {name: v for name, v in values.items() if len(v) > 1}
    if not several:
        return "one seed each"
    half = half_spread(*several.values())
    word = "more than" if lead > half else "within"
    if len(several) == len(values):
        return f"{word} the seed spread ±{half:.2f}"
    (owner,), single = several, [n for n in values if n not in several]
    return f"{word} {owner}'s seed spread ±{half:.2f}; one {single[0]} seed"


SEEDS_WANTED = 3


def missing(groups: dict, methods: tuple[str, ...], austen: list[dict] | None = None) -> str:
    """What issue 25's comparison still lacks: at the symmetric configs (the default's family)
    a method with fewer than SEEDS_WANTED seeds; at the asymmetric ones a method with no run;
    the equal-compute variant at a symmetric config; the Austen text at W4 g64 sym
    (`austen`: its runs, None to read them from results/peers_runs)."""
    labels = dict((m, label) for label, m in METHODS)
    seeds, unmeasured = [], []
    for config in CONFIGS[:3]:
        for method in methods:
            n = len(groups.get((config, method), []))
            if n < SEEDS_WANTED:
                seeds.append(f"{labels[method]} at {config} ({n} of {SEEDS_WANTED} seeds)")
    for method in methods:
        configs = [c for c in CONFIGS[3:] if not groups.get((c, method))]
        if configs:
            unmeasured.append(f"{labels[method]} at {', '.join(configs)}")
    configs = [c for c in CONFIGS[:3] if not groups.get((c, EQUAL_COMPUTE))]
    if configs:
        unmeasured.append(f"{labels[EQUAL_COMPUTE]} at {', '.join(configs)}")
    austen_groups = grouped(pd_runs("austen") if austen is None else austen)
    for method in methods:
        if not austen_groups.get(("W4 g64 sym", method)):
            unmeasured.append(f"{labels[method]} on the Austen text (`--text austen`) at W4 g64 sym")
    out = []
    if seeds:
        out.append("\n\nStill missing (one `benchmarks/peers.py` command each, as docs/results.md's "
                   "protocol says): " + "; ".join(seeds) + ".")
    if unmeasured:
        out.append(("\n\nNot measured at all yet: " if not seeds else " Not measured at all yet: ")
                   + "; ".join(unmeasured) + ".")
    return "".join(out)


def same_seed_differences(a: list[dict], b: list[dict]) -> list[str]:
    """'s0 -0.50 / +0.13' for each seed both groups ran: a's perplexity minus b's."""
    by_seed = {r["_seed"]: r for r in b}
    return [f"s{r['_seed']} {ppl(r, 'validation') - ppl(by_seed[r['_seed']], 'validation'):+.2f} / "
            f"{ppl(r, 'test') - ppl(by_seed[r['_seed']], 'test'):+.2f}"
            for r in sorted(a, key=lambda r: r["_seed"]) if r["_seed"] in by_seed]


# (the variant and the run it is compared with, as (variant, base) pairs in the order they
# are looked for at each config; its word, the base's word, the paragraph's opening, whether
# its CPU time is the point). A positive number is what the base gained over the variant.
def grid_pairs(variant: str) -> tuple:
    """A variant of the default against the default, then both on GPTQ's grid."""
    return (variant, "normtweak-default"), (variant + GPTQ_GRID, GPTQ_GRID_DEFAULT)


VARIANT_EFFECTS = [
    (grid_pairs("normtweak-joint-frozen-norms"), "frozen", "trained",
     "What training the norms adds inside the joint method (the same run with the norms frozen; "
     "a positive number is what the norms gained)", False),
    (grid_pairs("normtweak-default-bf16"), "bf16", "float32",
     "What training under bf16 autocast costs (the same run with the training steps' forward "
     "in bf16; a positive number is what float32 gained)", True),
    ((("normtweak-default", EQUAL_COMPUTE), (GPTQ_GRID_DEFAULT, EQUAL_COMPUTE + GPTQ_GRID)),
     "default", "equal compute",
     "What AutoRound-200's compute buys the joint method (the equal-compute variant, 208 steps "
     "x batch 8, against the default's 48; a positive number is what the extra steps gained)", True),
    (((GPTQ_GRID_DEFAULT, "normtweak-default"),), "GPTQ grid", "full range",
     "What the full-range symmetric grid (the default) gains over GPTQ's grid (the same run "
     "with `--no-full-range`; a positive number is what full range gained)", False),
]


def norms_effect(groups: dict) -> str:
    """What training the norms adds inside the joint method (the frozen-norms variant)."""
    return variant_effect(groups, *VARIANT_EFFECTS[0])


def variant_effect(groups: dict, pairs, word: str, base_word: str, opening: str,
                   show_cpu: bool = False) -> str:
    """A variant of a run against that run, on the seeds both have, beside the larger of the
    two's seed spreads (half the range over all their seeds), with the variant's CPU time as a share of the base's on those seeds. pairs:
    (variant, base) method names; at each config the first pair measured there is used (a
    pair on GPTQ's grid is marked so)."""
    out = []
    for config in CONFIGS:
        for variant, base in pairs:
            a, b = groups.get((config, base)), groups.get((config, variant))
            seeds = sorted({r["_seed"] for r in a or []} & {r["_seed"] for r in b or []})
            if seeds:
                break
        else:
            continue
        parts = []
        for split in ("validation", "test"):
            da = {r["_seed"]: ppl(r, split) for r in a}
            db = {r["_seed"]: ppl(r, split) for r in b}
            gain = statistics.fmean(db[s] - da[s] for s in seeds)
            half = half_spread(list(da.values()), list(db.values()))
            size = (("more than" if abs(gain) > half else "within")
                    + f" the larger seed spread ±{half:.2f}" if half is not None
                    else "one seed each: no spread to weigh it by")
            parts.append(f"{split} {statistics.fmean(db[s] for s in seeds):.2f} {word} vs "
                         f"{statistics.fmean(da[s] for s in seeds):.2f} {base_word} ({gain:+.2f}, {size})")
        cpu = {name: mean_finite(cpu_s(r) for r in g if r["_seed"] in seeds)
               for name, g in (("a", a), ("b", b))}
        if show_cpu and one_machine(a, b) and all(math.isfinite(v) for v in cpu.values()):
            parts.append(f"CPU time {cpu['b'] / cpu['a']:.0%} of {base_word}'s")
        grid = " (both on GPTQ's grid)" if base.endswith(GPTQ_GRID) else ""
        out.append(f"- **{config}**{grid}, seed(s) {', '.join(map(str, seeds))}: " + "; ".join(parts))
    if not out:
        return ""
    return f"\n\n{opening}:\n\n" + "\n".join(out)


def peers_table(runs: list[dict], configs: list[str], gptq_grid: bool = True) -> str:
    """One row per (config, method) measured: val / test as mean ± half-range over seeds,
    the test gap to RTN recovered (RTN on the row's grid: GPTQ's for the -gptqgrid rows),
    quantize wall and CPU seconds (mean), peak RSS. gptq_grid=False leaves out the rows on
    GPTQ's grid (the README's short table)."""
    groups, fl = grouped(runs), floats(runs)
    lines = ["| config | method | val ppl | test ppl | gap recovered (test) % | quantize s "
             "(wall / CPU) | peak RSS MB | runs |", "|---|---|---|---|---|---|---|---|"]
    f_test = statistics.fmean(ppl(r, "test") for r in fl.values()) if fl else math.nan
    f_val = statistics.fmean(ppl(r, "validation") for r in fl.values()) if fl else math.nan
    lines.append(f"| - | float (vs the Q4 reference) | {f_val:.2f} | {f_test:.2f} | - | - | - | "
                 f"seeds {sorted(fl)} |")
    for config in configs:
        rtn_test = {}
        for grid in ("", GPTQ_GRID):
            rtn = groups.get((config, "normtweak-rtn" + grid))
            rtn_test[grid] = statistics.fmean(ppl(r, "test") for r in rtn) if rtn else math.nan
        for label, method in METHODS:
            rs = groups.get((config, method))
            if not rs or (not gptq_grid and method.endswith(GPTQ_GRID)):
                continue
            tests = [ppl(r, "test") for r in rs]
            reference = rtn_test[GPTQ_GRID if method.endswith(GPTQ_GRID) else ""]
            gap = gap_recovered(f_test, reference, statistics.fmean(tests))
            timed = [r for r in rs if math.isfinite(cpu_s(r))]  # a resumed run's are partial
            times = (f"{statistics.fmean(r['quantize_s'] for r in timed):.0f} / "
                     f"{mean_finite(r.get('quantize_cpu_s') or math.nan for r in timed):.0f}"
                     if timed else "- (resumed)").replace("/ nan", "/ -")
            rss = statistics.fmean(r["peak_rss_mb"] for r in rs if r.get("peak_rss_mb"))
            seeds = ",".join(str(r["_seed"]) for r in sorted(rs, key=lambda r: r["_seed"]))
            revs = {r.get("revision", "?") for r in rs}
            lines.append(f"| {config} | {label} | {spread([ppl(r, 'validation') for r in rs])} "
                         f"| {spread(tests)} | {gap:.0f} | {times} | {rss:.0f} | seeds "
                         f"{seeds}; rev {', '.join(sorted(revs))} |")
    return "\n".join(lines)


def main_job_table() -> str:
    """The main job as a user meets it (benchmarks/main_job.py)."""
    path = RESULTS / "main_job.json"
    if not path.is_file():
        return "_not measured yet_"
    data = json.loads(path.read_text())
    r = data["row"]
    load = ", ".join(f"{x:.1f}" for x in (r["load_before"][1], r["load_after"][1]))
    return (f"{data['summary']}:\n\n{data['table']}\n\nMeasured with `{data['command']}` "
            f"(revision {data['revision']}) on {data['cores']} cores of an {data['cpu_model']}, "
            f"{r['threads']} thread(s), from an empty cache; 5-minute load average {load} "
            f"before / after (other work on the machine inflates wall time, not CPU time).")


def tweak_cost() -> str:
    """One sentence for the README's quick start: what the default tweak cost on SmolLM2."""
    runs = [r for r in pd_runs() if r["_method"] == "normtweak-default" and r["_seed"] == 0
            and r["config"] == "W4 g64 sym"]
    if not runs:
        return "_not measured yet_"
    r = runs[0]
    return (f"at 128 x 512 the tweak of SmolLM2-135M took {r['quantize_cpu_s'] / 60:.0f} "
            f"CPU-minutes on one thread ([the run]({r['_file']})).")


def grid_table() -> str:
    """The paper's (lr, scale) grid on SmolLM2 (normtweak grid), chosen on validation."""
    path = RESULTS / "grid_smollm2_paper.json"
    if not path.is_file():
        return "_not measured yet_"
    data = json.loads(path.read_text())
    lines = ["| lr | scale | val ppl | test ppl |", "|---|---|---|---|",
             f"| float | - | {data['float']['validation']:.2f} | {data['float']['test']:.2f} |",
             f"| plain RTN | - | {data['quantized']['validation']:.2f} | "
             f"{data['quantized']['test']:.2f} |"]
    for p in data["points"]:
        best = " (chosen)" if (p["lr"], p["scale"]) == (data["best"]["lr"], data["best"]["scale"]) else ""
        lines.append(f"| {p['lr']:g}{best} | {p['scale']:g} | {p['validation_ppl']:.2f} | "
                     f"{p['test_ppl']:.2f} |")
    return ("The paper's norm tweak (`--preset paper`) over its grid, W4A16, 16 x 128 Wikipedia "
            "calibration windows, 4 windows of 1024 tokens per split, chosen on validation "
            f"({data['cpu_s'] / 60:.0f} CPU-minutes on one thread):\n\n" + "\n".join(lines)
            + f"\n\n![the grid's heatmap](img/grid_smollm2_paper.png)\n\n`{data['command']}`")


def main_job_size_table() -> str:
    path = RESULTS / "main_job_size.json"
    if not path.is_file():
        return "_not measured yet_"
    data = json.loads(path.read_text())
    quant = data["rows"][0]["quant"] if data.get("rows") else {}
    note = ("\n\nMeasured before the full-range grid became the symmetric default: these runs "
            "are on GPTQ's grid (their QuantSpec records no `full_range`), so the command "
            "below, with today's default, makes new runs rather than render these."
            if quant.get("symmetric") and "full_range" not in quant else "")
    return data["caption"] + "\n\n" + data["table"] + f"\n\n`{data['command']}`" + note


def llamacpp_table() -> str:
    path = RESULTS / "llamacpp_ppl.json"
    if not path.is_file():
        return "_not measured yet_"
    data = json.loads(path.read_text())
    old_grid = any((r.get("spec") or {}).get("symmetric") and "full_range" not in r["spec"]
                   for r in data.get("rows", []))
    note = ("\n\nThe symmetric rows (Q4_0, Q8_0) were quantized on GPTQ's grid, before the "
            "full-range grid became the default; the check (llama.cpp against normtweak on the "
            "same file) does not depend on the grid." if old_grid else "")
    return f"{data['caption']}\n\n{data['table']}\n\n`{data['command']}`" + note


def block_cost_table(name: str = "block_cost.json") -> str:
    path = RESULTS / name
    if not path.is_file():
        return "_not measured yet_"
    data = json.loads(path.read_text())
    lines = ["| method | steps | dtype | wall s / block | CPU s / block |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['method']} | {r['steps']} | {r['dtype']} | "
                     f"{r['wall_s_per_block']:.1f} | {r['cpu_s_per_block']:.1f} |")
    return "\n".join(lines) + f"\n\n`{data['command']}`"


# --- plots ---------------------------------------------------------------------------------


def pareto_plot(runs: list[dict], config: str, path: Path) -> Path | None:
    """Test perplexity against quantization CPU seconds at one config, a point per method
    (the mean over seeds), normtweak's default highlighted."""
    groups = grouped(runs)
    points = []
    for label, method in METHODS:
        rs = groups.get((config, method))
        if not rs:
            continue
        cpu = mean_finite(cpu_s(r) for r in rs)
        if math.isfinite(cpu):
            points.append((label, method, cpu, statistics.fmean(ppl(r, "test") for r in rs)))
    if len(points) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, method, x, y in points:
        best = method == "normtweak-default"
        ax.scatter(max(x, 1.0), y, s=90 if best else 40, color="crimson" if best else "steelblue",
                   zorder=3)
        ax.annotate(label, (max(x, 1.0), y), textcoords="offset points", xytext=(6, 4),
                    fontsize=8, weight="bold" if best else "normal")
    ax.set_xscale("log")
    ax.set_xlabel("quantization CPU seconds (one thread; log scale)")
    ax.set_ylabel("test perplexity (lower is better)")
    ax.set_title(f"SmolLM2-135M, Wikipedia, {config}: accuracy vs cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def bits_plot(runs: list[dict], path: Path) -> Path | None:
    """Test perplexity against weight bits (symmetric, group 64) per method, where measured."""
    series: dict[str, dict[int, float]] = {}
    for (config, method), rs in grouped(runs).items():
        if not config.endswith("g64 sym"):
            continue
        bits = int(config.split()[0][1:])
        label = next((lbl for lbl, m in METHODS if m == method), method)
        series.setdefault(label, {})[bits] = statistics.fmean(ppl(r, "test") for r in rs)
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fl = floats(runs)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, values in sorted(series.items()):
        xs = sorted(values)
        ax.plot(xs, [values[x] for x in xs], "o-", ms=4, label=label,
                lw=2.5 if label.startswith("normtweak default") else 1.2)
    if fl:
        ax.axhline(statistics.fmean(ppl(r, "test") for r in fl.values()), color="grey", ls="--",
                   lw=1, label="float (the Q4 reference)")
    ax.set_yscale("log")
    ax.set_xlabel("weight bits (symmetric, one scale per 64 inputs)")
    ax.set_ylabel("test perplexity (log scale)")
    ax.set_title("SmolLM2-135M, Wikipedia: accuracy vs bits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


# --- history -------------------------------------------------------------------------------


def history_sections() -> list[str]:
    """The tables measured before 0.2, rendered from their JSONs."""
    out = []
    for name, title in [("accuracy_table_wikipedia.json", "Issue 13's protocol, Wikipedia"),
                        ("accuracy_table_austen.json", "Issue 13's protocol, Austen")]:
        path = RESULTS / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        lines = ["| config | method | val ppl | test ppl | quantize s | source |",
                 "|---|---|---|---|---|---|"]
        for r in data["rows"]:
            lines.append(f"| {r['config']} | {r['method']} | {_num(r.get('val'))} | "
                         f"{_num(r.get('test'))} | {_num(r.get('quantize_s'), 0)} | "
                         f"{r.get('source', '-')} |")
        f = data.get("float", {})
        out.append(f"### {title} (`results/{name}`)\n\nFloat: val {_num(f.get('validation'))}, "
                   f"test {_num(f.get('test'))}. Made by `python benchmarks/accuracy_table.py"
                   f"{' --text austen' if 'austen' in name else ''}` from the runs named in "
                   f"the last column.\n\n" + "\n".join(lines))
    for name in ("norm_tweaking_rtn.json", "norm_tweaking_gptq.json", "tweak_ablation.json",
                 "quantizers.json", "tweak_imported.json", "memory.json", "distributed.json",
                 "export_sizes.json", "eval_agreement.json", "norms_cpu.json"):
        path = RESULTS / name
        if path.is_file():
            out.append(_generic(name, json.loads(path.read_text())))
    return out


def _num(v, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _generic(name: str, data: dict) -> str:
    """A JSON's own rows as a table (every scalar column), with its command."""
    rows = data.get("rows") or []
    command = data.get("command", "")
    if not rows or not isinstance(rows[0], dict):
        return f"### `results/{name}`\n\n`{command}`\n\n(no table rows)"
    cols = [k for k, v in rows[0].items() if isinstance(v, (int, float, str)) or v is None]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return f"### `results/{name}`\n\n`{command}`\n\n" + "\n".join(lines)


# --- the pages -----------------------------------------------------------------------------


PROTOCOL = ("SmolLM2-135M-Instruct (its \"float\" weights are dequantized Q4_1, so every number is "
            "vs that Q4 reference); every method quantizes from the same calibration token ids, "
            "128 windows of 512 tokens of the Wikipedia train split (one id set per seed); "
            "perplexity per document (each from its own BOS) on the first 8 windows of 1024 "
            "tokens of the validation split (where choices are made) and the test split (what is "
            "reported). One torch thread per run on a 2-core CPU that other runs shared, so wall "
            "seconds are inflated; CPU seconds are the cost. No GPU was lent. Spread: ± half the "
            "range over the seeds in the last column. Made by `OMP_NUM_THREADS=1 python "
            "benchmarks/peers.py --threads 1 --configs C --seed S` (its --peers / --variants "
            "select the rows); one JSON per run in `results/peers_runs/` (`*pd*`).")


def blocks() -> dict[str, str]:
    """The generated blocks, by name (the README carries some of them)."""
    runs = pd_runs()
    return {"protocol": PROTOCOL,
            "headline": peers_table(runs, ["W4 g64 sym", "W3 g64 sym", "W4 per-channel sym"]),
            "verdict": verdict(runs),
            "readme-headline": peers_table(runs, ["W4 g64 sym", "W3 g64 sym", "W4 per-channel sym"],
                                           gptq_grid=False),
            "readme-verdict": verdict_table(runs),
            "asym": (peers_table(runs, CONFIGS[3:]) if any(r.get("config") in CONFIGS[3:] for r in runs)
                     else "_Not measured yet under this protocol (`--configs 4:64:asym`, "
                          "`3:64:asym`, `4:-1:asym`)._"),
            "austen": (peers_table(austen, ["W4 g64 sym"]) if (austen := pd_runs("austen"))
                       else "_Not measured yet (`--text austen`)._"),
            "main-job": main_job_table(), "tweak-cost": tweak_cost(), "main-job-size": main_job_size_table(),
            "llamacpp": llamacpp_table(), "grid": grid_table(), "block-cost": block_cost_table(),
            "block-cost-compile": block_cost_table("block_cost_compile.json")}


def results_page(b: dict[str, str]) -> str:
    return f"""# Results

_Generated by `python scripts/results_pages.py` from `results/*.json`; do not edit by hand._

## The standard protocol

{b['protocol']}

### normtweak's default against its peers (symmetric: W4A16's family)

{b['headline']}

{b['verdict']}

![accuracy against quantization cost](img/pareto_w4g64sym.png)

![accuracy against bits](img/bits_wikipedia.png)

### Asymmetric

{b['asym']}

### On the Austen text

The same protocol with `--text austen` (Jane Austen's six novels, from the Debian package
`r-cran-janeaustenr`): calibration windows from four of them, validation on *Northanger
Abbey*, test on *Persuasion* (first 8 x 1024-token windows each); float is SmolLM2 vs the Q4
reference on those windows.

{b['austen']}

### How the peers run

Each peer runs in its own virtual environment (their pins conflict with ours), through
`benchmarks/peer_runner.py`, with torch pinned to ours:

```bash
echo "torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])')" > /tmp/torch-constraints.txt
python -m venv --system-site-packages ../venv-autoround
../venv-autoround/bin/pip install "auto-round>=0.16,<0.17" -c /tmp/torch-constraints.txt
python -m venv --system-site-packages ../venv-llmc
../venv-llmc/bin/pip install "llmcompressor==0.14.*" -c /tmp/torch-constraints.txt
```

Do not `pip install -e .` into a peer environment: `peers.py` puts normtweak on the runner's
`PYTHONPATH`. The recipes (`--peers`): `autoround-200` is AutoRound's default (200 iterations,
lr 1/iters, batch 8, 128 x 512 samples, its default amp: bf16 autocast where it finds bf16 on
the CPU; each run's JSON records what it used); `autoround-fast` its "fast" recipe (200 iterations at batch 4);
`autoround-50` its "light" one (50 iterations, lr 5e-3); `llmc-gptq` llm-compressor's
`GPTQModifier` with its defaults (act-order "static", dampening 0.01, block 128). A peer whose
environment is missing is skipped and the table says so. Each peer's checkpoint is kept in
its own export format under `../peer-models/` for importing into `normtweak tweak --quantized`.

## The main job (`normtweak run`)

{b['main-job']}

### Its size, chosen on validation

The run's defaults (32 calibration windows of 512 tokens, 3 passes) are the point below that
keeps the whole job near 10 minutes on 2 idle cores of the AMD EPYC it was sized on (6 on the
Intel Xeon of the latest main-job run); more samples or passes improve validation
perplexity further at a proportional cost (`normtweak tweak` defaults to the paper's 128).
The points were made by `OMP_NUM_THREADS=1 python benchmarks/main_job_size.py --threads 1
--samples 16,32,64 --passes 1,2,3`, stopped after 64 x 1 (past the job's budget); the
command below renders the cached points.

{b['main-job-size']}

## GGUF under llama.cpp

{b['llamacpp']}

## The paper's grid search

{b['grid']}

## Cost per block against AutoRound at the same steps x batch

{b['block-cost']}

The same first two blocks at the joint method's 48 steps, eager and with the training steps'
block forward through torch.compile (`RunSpec(compile=True)`; compile time included, and the
CPU seconds of its compile workers), one run after the other while two single-thread
benchmark runs kept both cores busy (load average 2.4-3.0; so slower than the table above).
Two earlier pairs gave compile 7% less CPU time (the eager run overlapping a test run) and
1% more (three blocks): within the noise, so compile stays off:

{b['block-cost-compile']}

## Before 0.2

Measured with the 0.1 defaults and the documents of a split joined into one stream: see
[results-history.md](results-history.md).
"""


def history_page() -> str:
    body = "\n\n".join(history_sections())
    return f"""# Results before 0.2

_Generated by `python scripts/results_pages.py` from `results/*.json`; do not edit by hand._

These were measured before normtweak 0.2: asymmetric weights, one scale per output channel
by default, and perplexity on the documents of a split joined into one stream with one BOS
(0.2 scores each document from its own BOS, so every number here moves a little). The
analysis that went with them is in the README of commit 7ef6832.

{body}
"""


def readme_with(readme: str, b: dict[str, str]) -> str:
    for name in ("readme-headline", "readme-verdict", "main-job", "tweak-cost"):
        start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
        if start in readme and end in readme:
            head, rest = readme.split(start, 1)
            _, tail = rest.split(end, 1)
            readme = f"{head}{start}\n{b[name]}\n{end}{tail}"
    return readme


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when a page is out of date")
    args = p.parse_args(argv)
    b = blocks()
    pages = {DOCS / "results.md": results_page(b), DOCS / "results-history.md": history_page()}
    readme = ROOT / "README.md"
    pages[readme] = readme_with(readme.read_text(encoding="utf-8"), b)
    stale = [path for path, text in pages.items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)} (run python scripts/results_pages.py)")
        return 1 if stale else 0
    for path, text in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    runs = pd_runs()
    pareto_plot(runs, "W4 g64 sym", IMG / "pareto_w4g64sym.png")
    bits_plot(runs, IMG / "bits_wikipedia.png")
    print(f"wrote {', '.join(str(p.relative_to(ROOT)) for p in pages)} and {IMG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
