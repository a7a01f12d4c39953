"""docs/results.md, docs/results-history.md and the README's result blocks are generated from
results/*.json by scripts/results_pages.py: a page out of step with its JSONs fails here, and
the generator's arithmetic (mean ± half range, gap recovered) is checked on a hand case."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pages():
    spec = importlib.util.spec_from_file_location("results_pages", ROOT / "scripts" / "results_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pages_are_generated_from_the_committed_results(capsys):
    assert _pages().main(["--check"]) == 0, capsys.readouterr().out


def run(method, seed, val, test, cpu=None):
    """A hand-made run record as pd_runs reads it (W4 g64 sym)."""
    return {"_method": method, "_seed": seed, "config": "W4 g64 sym", "quantize_s": cpu,
            "quantize_cpu_s": cpu, "eval": {"validation": {"ppl": val}, "test": {"ppl": test}}}


def test_spread_and_gap_by_hand():
    pages = _pages()
    assert pages.spread([21.0]) == "21.00"
    assert pages.spread([20.0, 21.0, 20.5]) == "20.50 ± 0.50 (3)"
    # float 10, RTN 30, method 15: (30 - 15) / (30 - 10) = 75 % of the gap recovered
    assert pages.gap_recovered(10.0, 30.0, 15.0) == pytest.approx(75.0)


def test_config_labels_from_run_names():
    pages = _pages()
    assert pages.config_label("w4g64sym") == "W4 g64 sym"
    assert pages.config_label("w4pcsym") == "W4 per-channel sym"
    assert pages.config_label("w3g64asym") == "W3 g64 asym"
    with pytest.raises(ValueError):
        pages.config_label("float")


def test_verdict_calls_a_lead_inside_the_seed_spread_no_win():
    pages = _pages()

    runs = [run("normtweak-default", 0, 22.0, 19.0, 100), run("normtweak-default", 1, 22.4, 19.4, 100),
            run("autoround-200", 0, 23.0, 19.1, 200)]
    text = pages.verdict(runs, austen=[])
    # validation: 22.2 vs 23.0, ahead by 0.8 > spread 0.2; test: 19.2 vs 19.1, behind by 0.1 < 0.2
    # AutoRound-200 has one seed, so the spread is normtweak's alone, and the text says so
    assert ("validation 22.20 vs 23.00, normtweak ahead by 0.80 (more than normtweak's seed "
            "spread ±0.20; one AutoRound-200 seed)") in text
    assert ("test 19.20 vs 19.10, AutoRound-200 ahead by 0.10 (within normtweak's seed spread "
            "±0.20; one AutoRound-200 seed)") in text
    assert "CPU time 50% of AutoRound-200's" in text
    # seed 0, the one both ran: 22.0 - 23.0 = -1.00 on validation, 19.0 - 19.1 = -0.10 on test
    assert "(validation / test; negative: normtweak better): s0 -1.00 / -0.10." in text
    # two of three seeds and one of three at W4 g64; nothing at the two other symmetric configs
    assert ("normtweak default (joint, W4A16 recipe) at W4 g64 sym (2 of 3 seeds); "
            "AutoRound-200 (its default recipe) at W4 g64 sym (1 of 3 seeds); "
            "normtweak default (joint, W4A16 recipe) at W3 g64 sym (0 of 3 seeds)") in text


def test_bf16_effect_on_shared_seeds_with_its_cpu_share():
    pages = _pages()

    runs = [run("normtweak-default", 0, 22.0, 19.0, 120), run("normtweak-default", 1, 22.4, 19.4, 100),
            run("normtweak-default-bf16", 1, 22.5, 19.3, 75)]
    text = pages.variant_effect(pages.grouped(runs), *pages.VARIANT_EFFECTS[1])
    # seed 1 only: 22.5 - 22.4 = +0.10 and 19.3 - 19.4 = -0.10, both inside the spread (0.4 / 2);
    # CPU 75 against the default's 100 on seed 1 (seed 0's 120 is not compared)
    assert ("seed(s) 1: validation 22.50 bf16 vs 22.40 float32 (+0.10, within the larger seed "
            "spread ±0.20); test 19.30 bf16 vs 19.40 float32 (-0.10, within the larger seed "
            "spread ±0.20); CPU time 75% of float32's") in text


def test_norms_effect_compares_the_same_seeds():
    pages = _pages()

    runs = [run("normtweak-default", 0, 22.0, 19.0), run("normtweak-default", 1, 22.4, 19.4),
            run("normtweak-joint-frozen-norms", 0, 22.5, 19.05)]
    text = pages.norms_effect(pages.grouped(runs))
    assert ("seed(s) 0: validation 22.50 frozen vs 22.00 trained (+0.50, more than the larger "
            "seed spread ±0.20)") in text
    assert "test 19.05 frozen vs 19.00 trained (+0.05, within the larger seed spread ±0.20)" in text
    assert "GPTQ's grid" not in text


def test_a_variant_on_gptqs_grid_is_compared_with_the_default_on_gptqs_grid():
    pages = _pages()
    # frozen norms measured on GPTQ's grid only: compared with the GPTQ-grid default (22.2),
    # never with the full-range default (21.0); one seed each: no spread to call it by
    runs = [run("normtweak-default", 0, 21.0, 18.0), run("normtweak-default-gptqgrid", 0, 22.2, 19.2),
            run("normtweak-joint-frozen-norms-gptqgrid", 0, 22.5, 19.1)]
    text = pages.norms_effect(pages.grouped(runs))
    assert ("**W4 g64 sym** (both on GPTQ's grid), seed(s) 0: validation 22.50 frozen vs 22.20 "
            "trained (+0.30, one seed each: no spread to weigh it by); test 19.10 frozen vs 19.20 "
            "trained (-0.10, one seed each: no spread to weigh it by)") in text
    # with the full-range variant measured too, that pair is the one shown
    runs.append(run("normtweak-joint-frozen-norms", 0, 21.4, 18.1))
    text = pages.norms_effect(pages.grouped(runs))
    assert "validation 21.40 frozen vs 21.00 trained (+0.40" in text and "GPTQ's grid" not in text


def test_gap_is_measured_from_rtn_on_the_rows_grid():
    pages = _pages()
    # float 10; RTN 30 (full range) and 50 (GPTQ's grid): a GPTQ-grid row at 20 recovered
    # (50 - 20) / (50 - 10) = 75 %, a default row at 20 (30 - 20) / (30 - 10) = 50 %
    runs = [run("float", 0, 11.0, 10.0), run("normtweak-rtn", 0, 31.0, 30.0),
            run("normtweak-rtn-gptqgrid", 0, 51.0, 50.0), run("normtweak-default", 0, 21.0, 20.0),
            run("normtweak-default-gptqgrid", 0, 21.0, 20.0)]
    for r in runs:
        r["peak_rss_mb"] = 1000.0
    rows = {line.split(" | ")[1]: line.split(" | ")[4] for line in
            pages.peers_table(runs, ["W4 g64 sym"]).splitlines()[3:]}
    assert rows["normtweak default (joint, W4A16 recipe)"] == "50"
    assert rows["normtweak joint, GPTQ grid (the default before the switch)"] == "75"
    assert rows["RTN, GPTQ grid"] == "0" and rows["RTN"] == "0"


def test_a_resumed_run_shows_no_cost():
    """A run resumed from checkpoints timed its last process only: no CPU time in the table,
    none in the verdict's CPU share, while its perplexities count."""
    pages = _pages()
    resumed = {**run("normtweak-default", 1, 22.4, 19.4, 10), "resumed_blocks": 20}
    runs = [run("normtweak-rtn", 0, 29.0, 26.0, 2), run("normtweak-default", 0, 22.0, 19.0, 100),
            resumed, run("autoround-200", 0, 23.0, 19.1, 200)]
    for r in runs:
        r["peak_rss_mb"] = 1000.0
    table = pages.peers_table(runs, ["W4 g64 sym"])
    row = next(line for line in table.splitlines() if "normtweak default" in line)
    assert "| 22.20 ± 0.20 (2) | 19.20 ± 0.20 (2) |" in row and "| 100 / 100 |" in row
    assert "CPU time 50% of AutoRound-200's" in pages.verdict(runs, austen=[])  # 100 vs 200, not 55 vs 200
    only_resumed = [runs[0], resumed, runs[3]]
    assert "| - (resumed) |" in pages.peers_table(only_resumed, ["W4 g64 sym"])
    assert "CPU time" not in pages.verdict(only_resumed, austen=[]).split("Still missing")[0]


def test_equal_compute_variant_is_compared_with_autoround_200():
    pages = _pages()
    runs = [run("normtweak-default", 0, 22.0, 19.0, 100), run("autoround-200", 0, 23.0, 19.1, 200),
            run("normtweak-joint-equal-compute", 0, 21.5, 18.8, 400)]
    text = pages.verdict(runs, austen=[])
    equal = text.split("equal-compute variant (AutoRound-200's steps x batch) against AutoRound-200")[1]
    # 21.5 vs 23.0 and 18.8 vs 19.1, one seed each; CPU 400 / 200
    assert ("validation 21.50 vs 23.00, normtweak ahead by 1.50 (one seed each); "
            "test 18.80 vs 19.10, normtweak ahead by 0.30 (one seed each); "
            "CPU time 200% of AutoRound-200's. Seed by seed, normtweak minus AutoRound-200 "
            "(validation / test; negative: normtweak better): s0 -1.50 / -0.30.") in equal


def test_missing_names_asymmetric_configs_equal_compute_and_austen():
    pages = _pages()
    runs = [run("normtweak-default", 0, 22.0, 19.0), run("autoround-200", 0, 23.0, 19.1),
            {**run("normtweak-default", 0, 25.0, 21.0), "config": "W4 g64 asym"},
            {**run("normtweak-joint-equal-compute", 0, 21.5, 18.8), "config": "W3 g64 sym"}]
    austen = [run("autoround-200", 0, 30.0, 31.0)]
    text = pages.verdict(runs, austen=austen).split("Not measured at all yet: ")[1]
    assert ("normtweak default (joint, W4A16 recipe) at W3 g64 asym, W4 per-channel asym; "
            "AutoRound-200 (its default recipe) at W4 g64 asym, W3 g64 asym, W4 per-channel asym; "
            "normtweak joint, equal compute (208 steps) at W4 g64 sym, W4 per-channel sym; "
            "normtweak default (joint, W4A16 recipe) on the Austen text (`--text austen`) at W4 g64 sym."
            ) == text
    # everything measured: no such sentence
    full = runs + [{**run(m, 0, 25.0, 21.0), "config": c} for m in ("normtweak-default", "autoround-200")
                   for c in ("W3 g64 asym", "W4 per-channel asym", "W4 g64 asym")]
    full += [{**run("normtweak-joint-equal-compute", 0, 21.5, 18.8), "config": c}
             for c in ("W4 g64 sym", "W4 per-channel sym")]
    assert "Not measured" not in pages.verdict(full, austen=austen + [run("normtweak-default", 0, 30, 31)])


def test_austen_pair_gets_its_own_comparison():
    pages = _pages()
    runs = [run("normtweak-default", 0, 22.0, 19.0, 100), run("autoround-200", 0, 23.0, 19.1, 200)]
    assert "Austen text (`--text austen`: calibrated" not in pages.verdict(runs, austen=[])
    # Austen: normtweak 30.0 / 33.5 against AutoRound-200 30.5 / 33.0, one seed each
    austen = [run("normtweak-default", 0, 30.0, 33.5, 100), run("autoround-200", 0, 30.5, 33.0, 400)]
    text = pages.verdict(runs, austen=austen).split("evaluated on Jane Austen's novels):")[1]
    assert text.lstrip().startswith(
        "- **W4 g64 sym** (seeds 1 vs 1): validation 30.00 vs 30.50, normtweak ahead by 0.50 "
        "(one seed each); test 33.50 vs 33.00, AutoRound-200 ahead by 0.50 (one seed each); "
        "CPU time 25% of AutoRound-200's.")


def test_seed_note_names_whose_spread_a_lead_is_measured_against():
    pages = _pages()
    # both with several seeds: the larger half-range, (22.0 - 21.0) / 2 = 0.50
    both = {"normtweak": [21.0, 22.0], "AutoRound-200": [22.0, 22.4]}
    assert pages.seed_note(0.6, both) == "more than the seed spread ±0.50"
    assert pages.seed_note(0.5, both) == "within the seed spread ±0.50"
    # one side with a single seed: only the other's spread, (24.51 - 24.15) / 2 = 0.18
    one = {"normtweak": [23.65], "AutoRound-200": [24.15, 24.51]}
    assert pages.seed_note(0.68, one) == ("more than AutoRound-200's seed spread ±0.18; "
                                          "one normtweak seed")
    assert pages.seed_note(0.1, {"normtweak": [1.0], "AutoRound-200": [2.0]}) == "one seed each"


def test_cpu_time_compared_only_on_one_machine():
    """CPU seconds from two machines are not compared (an AMX-bf16 Xeon halves AutoRound's)."""
    pages = _pages()
    xeon = {"model": "Intel(R) Xeon(R) Processor", "bf16": ["avx512_bf16", "amx_bf16"]}
    same = [run("normtweak-default", 0, 22.0, 19.0, 50), run("autoround-200", 0, 22.5, 19.5, 100)]
    (line,) = pages.head_to_head(pages.grouped(same), "normtweak-default", "autoround-200")
    assert "CPU time 50% of AutoRound-200's" in line
    mixed = [dict(same[0], cpu=xeon), same[1]]
    (line,) = pages.head_to_head(pages.grouped(mixed), "normtweak-default", "autoround-200")
    assert "CPU time not compared (the runs span machines)" in line and "50%" not in line
    both = [dict(r, cpu=xeon) for r in same]
    (line,) = pages.head_to_head(pages.grouped(both), "normtweak-default", "autoround-200")
    assert "CPU time 50% of AutoRound-200's" in line


def test_verdict_table_by_hand():
    """The README's verdict table: means, normtweak minus AutoRound-200 beside the larger seed
    spread, and a win only outside the spread with three seeds on both sides."""
    pages = _pages()
    nt = [run("normtweak-default", s, v, t) for s, v, t in ((0, 22.0, 19.0), (1, 22.2, 19.1), (2, 22.4, 19.2))]
    ar = [run("autoround-200", s, v, t) for s, v, t in ((0, 22.3, 19.5), (1, 22.5, 19.6), (2, 22.1, 19.7))]
    row = pages.verdict_table(nt + ar, austen=[]).splitlines()[2]
    # val 22.2 vs 22.3: -0.10, spreads 0.2 and 0.2 -> level there; test 19.1 vs 19.6: -0.50
    # against the larger spread 0.1 -> a win, three seeds each
    assert row == ("| W4 g64 sym | default | 3 / 3 | 22.20 / 19.10 | 22.30 / 19.60 | -0.10 (±0.20) | "
                   "-0.50 (±0.10) | **win** |")
    # the same lead on two seeds each is not a win yet
    row = pages.verdict_table(nt[:2] + ar[:2], austen=[]).splitlines()[2]
    assert row.endswith("| -0.50 (±0.05) | ahead (2 seeds; 3 are the bar) |")
    # inside the spread, either way, is level; outside it and behind is behind
    assert pages.call(-0.05, 0.10, (3, 3)) == "level (within the spread)"
    assert pages.call(+0.05, 0.10, (3, 3)) == "level (within the spread)"
    assert pages.call(+0.30, 0.10, (3, 3)) == "**behind**"
    assert pages.call(-0.30, None, (1, 1)) == "ahead, one seed each"
    # the equal-compute variant and the Austen pair get rows of their own
    eq = [run("normtweak-joint-equal-compute", 0, 21.0, 18.0)]
    austen = [run("normtweak-default", 0, 32.0, 34.0), run("autoround-200", 0, 32.5, 34.1)]
    rows = pages.verdict_table(nt + ar + eq, austen=austen).splitlines()[2:]
    assert [r.split(" | ")[1] for r in rows] == ["default", "equal compute", "default, Austen text"]
    assert rows[2].endswith("| -0.50 | -0.10 | ahead, one seed each |")


def test_equal_compute_effect_against_the_default_on_its_grid():
    pages = _pages()
    effect = next(v for v in pages.VARIANT_EFFECTS if v[2] == "equal compute")
    runs = [run("normtweak-default", 0, 22.0, 19.0, 100), run("normtweak-joint-equal-compute", 0, 21.5, 18.8, 400)]
    text = pages.variant_effect(pages.grouped(runs), *effect)
    # the default minus the variant: 22.0 - 21.5 = +0.50 and 19.0 - 18.8 = +0.20 gained by the
    # extra steps; the default's CPU time is 100 / 400 of the variant's
    assert "validation 22.00 default vs 21.50 equal compute (+0.50, one seed each" in text
    assert "test 19.00 default vs 18.80 equal compute (+0.20," in text
    assert "CPU time 25% of equal compute's" in text and "GPTQ's grid" not in text
    # with only GPTQ-grid runs of both, those are compared, and marked so
    gptq = [dict(r, _method=r["_method"] + "-gptqgrid") for r in runs]
    assert "(both on GPTQ's grid)" in pages.variant_effect(pages.grouped(gptq), *effect)
