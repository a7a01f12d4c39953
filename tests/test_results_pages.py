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


def test_spread_and_gap_by_hand():
    pages = _pages()
    assert pages.spread([21.0]) == "21.00"
    assert pages.spread([20.0, 21.0, 20.5]) == "20.50 ± 0.50 (3)"
    # float 10, RTN 30, method 15: (30 - 15) / (30 - 10) = 75 % of the gap recovered
    assert pages.gap_recovered(10.0, 30.0, 15.0) == pytest.approx(75.0)
