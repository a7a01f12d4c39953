"""Markdown tables (normtweak.common.tables), shared by every report and command."""

import math

from normtweak.common.tables import format_value, markdown_table
from normtweak.evaluate import report


def test_cells_and_columns():
    rows = [{"model": "float", "ppl": 12.3456, "n": 3}, {"model": "q", "ppl": math.nan}]
    assert markdown_table(rows, ["model", ("ppl", "perplexity"), "n"]).splitlines() == [
        "| model | perplexity | n |", "|---|---|---|", "| float | 12.35 | 3 |", "| q | - | - |"]
    assert [format_value(v) for v in (1234.5, 0.123456, None, True)] == ["1234.5", "0.1235", "-", "True"]


def test_reports_use_the_same_table():
    assert report.markdown_table is markdown_table and report.format_value is format_value
