"""benchmarks/peers.py helpers: configs, run names, the table, finding a peer's environment."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peers = _load("peers")


def test_parse_configs_and_labels():
    assert peers.parse_configs("4:64,3:64,4:-1") == [(4, 64), (3, 64), (4, -1)]
    assert peers.config_label(4, -1) == "W4 per-channel asym"
    assert peers.config_tag(3, 64) == "w3g64"
    with pytest.raises(ValueError, match="bits:group_size"):
        peers.parse_configs("4-64")


def test_run_tag_changes_with_every_setting():
    args = SimpleNamespace(text="wikipedia", calib_samples=128, calib_len=512, seed=0,
                           max_windows=8, window=1024, threads=1)
    base = peers.run_tag(args, "llmc-gptq", 4, 64)
    assert base == "wikipedia_llmc-gptq_w4g64_c128x512s0_e8x1024_t1"
    for field, value in [("text", "austen"), ("calib_samples", 64), ("calib_len", 2048),
                         ("seed", 1), ("max_windows", 0), ("threads", 2)]:
        other = SimpleNamespace(**{**vars(args), field: value})
        assert peers.run_tag(other, "llmc-gptq", 4, 64) != base


def _run(method, config, val, test, seconds=1.0):
    return {"method": method, "config": config, "quantize_s": seconds, "peak_rss_mb": 100.0,
            "eval": {"validation": {"ppl": val}, "test": {"ppl": test}}}


def test_table_gap_is_against_normtweak_rtn_of_the_same_config():
    float_run = {"eval": {"validation": {"ppl": 20.0}, "test": {"ppl": 10.0}}}
    runs = [_run("normtweak-rtn", "W4 g64 asym", 30.0, 20.0),
            _run("llmc-gptq", "W4 g64 asym", 25.0, 15.0),  # (20 - 15) / (20 - 10) = 50 %
            _run("autoround-rtn", "W3 g64 asym", 60.0, 50.0)]  # no RTN reference for W3
    rows = peers.table_rows(float_run, runs)
    by = {(r["method"], r["config"]): r for r in rows}
    assert by[("float", "-")]["test_ppl"] == 10.0
    assert by[("llmc-gptq", "W4 g64 asym")]["gap_recovered_%"] == pytest.approx(50.0)
    assert by[("normtweak-rtn", "W4 g64 asym")]["gap_recovered_%"] is None
    assert by[("autoround-rtn", "W3 g64 asym")]["gap_recovered_%"] is None
    table = peers.markdown(rows)
    assert "| llmc-gptq | W4 g64 asym | 25.00 | 15.00 | 50.0 |" in table


def test_peer_python_missing_environment_and_package(tmp_path):
    args = SimpleNamespace(venv_llmc=str(tmp_path / "nowhere"), venv_autoround=str(tmp_path))
    if importlib.util.find_spec("llmcompressor") is None:
        assert peers.peer_python("llmc", args) is None
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    args.venv_llmc = str(venv)
    found = peers.peer_python("llmc", args)
    assert found == (venv / "bin" / "python" if importlib.util.find_spec("llmcompressor")
                     else None)
