"""Gap recovered and tables on hand cases."""

import json
import math

import pytest

from normtweak.evaluate.report import compare_rows, gap_recovered, markdown_table, write_json


def test_gap_recovered_hand_cases():
    assert gap_recovered(10.0, 20.0, 12.5) == pytest.approx(75.0)
    assert gap_recovered(10.0, 20.0, 20.0) == 0.0
    assert gap_recovered(10.0, 20.0, 10.0) == pytest.approx(100.0)
    assert gap_recovered(10.0, 20.0, 22.0) == pytest.approx(-20.0)
    with pytest.raises(ValueError, match="no gap"):
        gap_recovered(10.0, 10.0, 9.0)


def test_gap_recovered_of_a_diverged_run_is_nan():
    assert math.isnan(gap_recovered(10.0, 20.0, float("nan")))
    assert math.isnan(gap_recovered(10.0, 20.0, float("inf")))
    with pytest.raises(ValueError, match="must be finite"):
        gap_recovered(float("nan"), 20.0, 12.0)


def test_compare_table_hand_case(tmp_path):
    rows = compare_rows({"float": {"ppl": 28.0}, "quant": {"ppl": 48.0}, "tweaked": {"ppl": 33.0}})
    assert [r["model"] for r in rows] == ["float", "quant", "tweaked"]
    assert "gap_recovered_%" not in rows[0] and "gap_recovered_%" not in rows[1]
    assert rows[2]["gap_recovered_%"] == pytest.approx(75.0)
    table = markdown_table(rows, ["model", "ppl", ("gap_recovered_%", "gap %")])
    assert table.splitlines() == [
        "| model | ppl | gap % |",
        "|---|---|---|",
        "| float | 28.00 | - |",
        "| quant | 48.00 | - |",
        "| tweaked | 33.00 | 75.00 |",
    ]
    path = write_json(tmp_path / "r.json", rows)
    assert json.loads(path.read_text())[2]["gap_recovered_%"] == pytest.approx(75.0)
