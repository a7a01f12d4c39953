"""benchmarks/accuracy_table.py: the gap columns by hand, runs of other protocols left out."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("accuracy_table",
                                               ROOT / "benchmarks" / "accuracy_table.py")
table_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table_mod)


def test_gap_hand_cases():
    # RTN 30, float 10: a method at 25 closes 5 of 20 -> 25%; one at 35 is 25% worse.
    assert table_mod.gap(30.0, 25.0, 10.0) == pytest.approx(0.25)
    assert table_mod.gap(30.0, 35.0, 10.0) == pytest.approx(-0.25)
    assert math.isnan(table_mod.gap(10.0, 12.0, 10.0))  # no gap to close
    assert math.isnan(table_mod.gap(float("nan"), 12.0, 10.0))


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


def test_table_joins_runs_peers_and_reference(tmp_path):
    acc, peers = tmp_path / "acc", tmp_path / "peers"
    acc.mkdir(), peers.mkdir()
    _write(acc / "wikipedia_float_8.json", {"validation": 12.0, "test": 10.0})
    row = {"config": "W4 g64", "quantize_s": 1.0, "peak_rss_gib": 1.0}
    _write(acc / "wikipedia_w4g64_rtn_a.json", {**row, "variant": "rtn", "val": 33.0, "test": 30.0})
    _write(acc / "wikipedia_w4g64_gptq_b.json", {**row, "variant": "gptq", "val": 23.0,
                                                  "test": 20.0})
    _write(acc / "wikipedia_w4g64_gptq+round_c.json", {
        **row, "variant": "gptq+round", "val": 16.0, "test": 15.0,
        "calib": dict(table_mod.DEFAULT_CALIB), "max_windows": 8})
    # another calibration size: not this protocol's row
    _write(acc / "wikipedia_w4g64_gptq_d.json", {
        **row, "variant": "gptq", "val": 99.0, "test": 99.0,
        "calib": {"samples": 32, "len": 512, "seed": 0}, "max_windows": 8})
    _write(peers / f"wikipedia_llmc-gptq_w4g64_{table_mod.PROTOCOL}_t1.json", {
        "method": "llmc-gptq", "config": "W4 g64 asym", "quantize_s": 5.0, "peak_rss_mb": 9.0,
        "eval": {"validation": {"ppl": 24.0}, "test": {"ppl": 22.0}}})
    ref = tmp_path / "ref.json"
    _write(ref, {"source": "somebody", "text": "wikipedia",
                 "rows": [{"config": "W4 g64", "method": "AutoRound-50", "test": 14.0}]})
    result = table_mod.table("wikipedia", acc, peers, ref)
    by = {r["method"]: r for r in result["rows"]}
    assert set(by) == {"normtweak rtn", "normtweak gptq", "normtweak gptq+round", "llmc-gptq",
                       "AutoRound-50"}
    assert by["normtweak gptq"]["test"] == 20.0
    # vs RTN (30 -> float 10): 15 closes 75%; vs GPTQ (20 -> 10): 15 closes 50%
    assert by["normtweak gptq+round"]["gap_rtn"] == pytest.approx(0.75)
    assert by["normtweak gptq+round"]["gap_gptq"] == pytest.approx(0.5)
    assert by["llmc-gptq"]["gap_rtn"] == pytest.approx(0.4)
    assert by["AutoRound-50"]["gap_gptq"] == pytest.approx(0.6)
    assert math.isnan(by["AutoRound-50"]["val"])
    text = table_mod.markdown(result)
    assert "| W4 g64 | AutoRound-50 | – | 14.00 | 80 | 60 |" in text
    # the study: GPTQ at two calibration sizes (the run without a record is 128 x 512)
    study = result["calibration"]
    assert [(r["method"], r["samples"], r["len"], r["test"]) for r in study] == [
        ("normtweak gptq", 32, 512, 99.0), ("normtweak gptq", 128, 512, 20.0)]
    assert "| W4 g64 | normtweak gptq | 32 x 512 | 0 | 99.00 | 99.00 | 1 |" in text


def test_imported_rows_parse_configs_and_keep_the_protocol(tmp_path):
    runs = tmp_path / "imported"
    runs.mkdir()

    def run(checkpoint, after_test, **extra):
        return {"checkpoint": checkpoint, "preset": "paper", "tweak_s": 7.0,
                "after": {"validation": after_test + 1, "test": after_test}, **extra}

    _write(runs / "wikipedia-autoround-50-fp32-w4pc-128x512_paper_a.json",
           run("wikipedia-autoround-50-fp32-w4pc-128x512", 21.0))
    _write(runs / "wikipedia-llmc-gptq-w3g64-128x512_paper_b.json",
           run("wikipedia-llmc-gptq-w3g64-128x512", 33.0))
    # other calibration sizes or windows: not this protocol
    _write(runs / "wikipedia-llmc-gptq-w3g64-128x128_paper_c.json",
           run("wikipedia-llmc-gptq-w3g64-128x128", 1.0))
    _write(runs / "wikipedia-llmc-gptq-w4g64-128x512_paper_d.json",
           run("wikipedia-llmc-gptq-w4g64-128x512", 2.0, max_windows=2))
    _write(runs / "austen-llmc-gptq-w4g64-128x512_paper_e.json",
           run("austen-llmc-gptq-w4g64-128x512", 3.0))
    rows = table_mod.imported_rows(runs, "wikipedia")
    assert sorted((r["config"], r["method"], r["val"], r["test"]) for r in rows) == [
        ("W3 g64", "llmc-gptq + normtweak paper tweak (imported)", 34.0, 33.0),
        ("W4 per-channel", "autoround-50-fp32 + normtweak paper tweak (imported)", 22.0, 21.0)]


def test_calibration_study_includes_peers_at_two_sizes(tmp_path):
    acc, peers = tmp_path / "acc", tmp_path / "peers"
    acc.mkdir(), peers.mkdir()
    row = {"config": "W3 g64", "quantize_s": 1.0, "max_windows": 8}
    _write(acc / "wikipedia_w3g64_rtn+round-kb_a.json", {
        **row, "variant": "rtn+round-kb", "val": 30.0, "test": 28.0})  # no record: 128 x 512
    _write(acc / "wikipedia_w3g64_rtn+round-kb_b.json", {
        **row, "variant": "rtn+round-kb", "val": 29.0, "test": 27.0,
        "calib": {"samples": 128, "len": 128, "seed": 0}})

    def peer(method, calib, test, windows=8):
        _write(peers / f"wikipedia_{method}_w3g64_{calib}_e{windows}x1024_t1.json", {
            "method": method, "config": "W3 g64 asym", "quantize_s": 2.0,
            "eval": {"validation": {"ppl": test + 1}, "test": {"ppl": test}}})

    peer("autoround-50-fp32", "c128x512s0", 26.0)
    peer("autoround-50-fp32", "c128x128s0", 25.5)
    peer("autoround-50-fp32", "c128x64s0", 1.0, windows=2)  # other evaluation: left out
    peer("llmc-gptq", "c128x512s0", 36.0)  # one size only: not in the study
    peer("normtweak-rtn", "c128x512s0", 61.0)
    peer("normtweak-rtn", "c128x128s0", 60.0)  # accuracy.py's rows stand for ours
    rows = table_mod.calibration_rows(acc, "wikipedia", peers_runs=peers)
    assert [(r["method"], r["samples"], r["len"], r["val"], r["test"]) for r in rows] == [
        ("autoround-50-fp32", 128, 128, 26.5, 25.5), ("autoround-50-fp32", 128, 512, 27.0, 26.0),
        ("normtweak rtn+round-kb", 128, 128, 29.0, 27.0),
        ("normtweak rtn+round-kb", 128, 512, 30.0, 28.0)]
