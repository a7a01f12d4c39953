"""Result tables: pure functions that turn numbers into rows, Markdown and JSON.

    gap recovered % = (ppl_quant - ppl_tweaked) / (ppl_quant - ppl_float) * 100

100 % means tweaking brought the quantized model back to float perplexity, 0 % means
no change, negative means it got worse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from normtweak.evaluate.taskdata import write_atomic


def gap_recovered(float_ppl: float, quant_ppl: float, tweaked_ppl: float) -> float:
    """Percent of the float-to-quantized perplexity gap that tweaking recovers (NaN when the
    tweaked perplexity is not finite: a diverged run)."""
    gap = quant_ppl - float_ppl
    if not math.isfinite(tweaked_ppl):
        return math.nan  # a diverged (NaN/Inf) tweak recovers nothing measurable
    if not all(math.isfinite(x) for x in (float_ppl, quant_ppl)):
        raise ValueError("the float and quantized perplexities must be finite")
    if gap == 0:
        raise ValueError(
            f"the quantized model has the float model's perplexity ({float_ppl}): no gap to recover"
        )
    return (quant_ppl - tweaked_ppl) / gap * 100.0


def format_value(value: Any, digits: int = 4) -> str:
    """A table cell: floats with 1, 2 or `digits` decimals (>= 1000, >= 10, smaller), None/NaN '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.{digits}f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str | tuple[str, str]]) -> str:
    """A Markdown table of `rows`; columns: keys, or (key, header) pairs. Missing cells: '-'."""
    cols = [(c, c) if isinstance(c, str) else (c[0], c[1]) for c in columns]
    lines = ["| " + " | ".join(h for _, h in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines)


def compare_rows(
    ppl: Mapping[str, Mapping[str, Any]],
    float_label: str = "float",
    quant_label: str = "quant",
) -> list[dict[str, Any]]:
    """One row per model label, adding `gap_recovered_%` to rows other than float/quant.

    ppl: label -> a dict with at least "ppl" (e.g. `dataclasses.asdict(PerplexityResult)`).
    The gap column needs both a `float_label` and a `quant_label` entry.
    """
    rows = [{"model": label, **dict(values)} for label, values in ppl.items()]
    if float_label in ppl and quant_label in ppl:
        f, q = ppl[float_label]["ppl"], ppl[quant_label]["ppl"]
        for row in rows:
            if row["model"] not in (float_label, quant_label):
                row["gap_recovered_%"] = gap_recovered(f, q, row["ppl"])
    return rows


def write_json(path: str | Path, obj: Any) -> Path:
    """Write obj as indented JSON, atomically."""
    path = Path(path)
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    write_atomic(path, text if text.endswith("\n") else text + "\n")
    return path
