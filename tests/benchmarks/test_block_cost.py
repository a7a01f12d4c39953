"""benchmarks/block_cost.py helpers: step counts, arguments, the table (no model runs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("block_cost", ROOT / "benchmarks" / "block_cost.py")
block_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(block_cost)


def test_normtweak_iters_round_up_to_whole_passes():
    assert block_cost.steps_per_pass(128, 8) == 16
    assert block_cost.normtweak_iters(48, 128, 8) == 3  # the joint preset's 48 steps
    assert block_cost.normtweak_iters(200, 128, 8) == 13  # 208 steps: AutoRound-200's compute
    assert block_cost.normtweak_iters(16, 128, 8) == 1
    assert block_cost.steps_per_pass(100, 8) == 13  # the last batch is short


def test_parse_defaults_and_lists():
    a = block_cost.parse([])
    assert (a.blocks, a.samples, a.seq_len, a.batch, a.bits, a.group_size) == (2, 128, 512, 8, 4, 64)
    assert a.step_list == [48, 200] and a.kb_off == {48}
    assert a.method_list == ["normtweak", "autoround-amp", "autoround-fp32"]
    a = block_cost.parse(["--steps", "16", "--keep-better-off-at", "", "--methods", "normtweak"])
    assert a.step_list == [16] and a.kb_off == set() and a.method_list == ["normtweak"]
    with pytest.raises(SystemExit):
        block_cost.parse(["--methods", "gptq"])


def test_markdown_rows_and_failures():
    ok = {"method": "normtweak joint", "target_steps": 200, "steps": 208, "batch": 8,
          "dtype": "float32", "wall_s_per_block": 104.0, "cpu_s_per_block": 100.0,
          "block_wall_s": [100.0, 108.0], "loadavg_before": (1.5, 1.0, 1.0)}
    failed = {"method": "AutoRound amp=False", "target_steps": 48, "error": "exit 1"}
    table = block_cost.markdown([ok, failed])
    lines = table.splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| normtweak joint | 208 (200) | 8 | float32 | 104.0 | 100.0 | 500 | 100.0, 108.0 | 1.50 |" in table
    assert "failed: exit 1" in table


def test_planned_runs_in_order():
    a = block_cost.parse(["--steps", "48", "--methods", "normtweak,normtweak-compile,autoround-amp"])
    assert block_cost.planned_runs(a, 48) == [("normtweak", True), ("normtweak", False),
                                             ("normtweak-compile", True), ("autoround", True)]


def test_run_normtweak_on_a_tiny_model(tiny_llama):
    """The normtweak row as main() makes it, on a saved tiny Llama (its first block, 4 samples
    of 16 tokens, 1 step): it runs, and its numbers add up."""
    from normtweak.testing import tiny_batch

    a = block_cost.parse(["--model", str(tiny_llama), "--blocks", "1", "--batch", "4"])
    row = block_cost.run_normtweak(a, tiny_batch(4, 16), 1, True)
    assert (row["steps"], row["iters"], row["compile"]) == (1, 1, False)
    assert row["method"] == "normtweak joint" and len(row["block_wall_s"]) == 1
    assert 0 < row["block_wall_s"][0] <= row["wall_s"] and row["cpu_s"] > 0
    before, after = row["block_losses"][0]
    assert after <= before or row["kept_start"][0]
