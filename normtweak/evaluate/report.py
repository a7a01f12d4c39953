"""Result tables: pure functions that turn numbers into rows, Markdown and JSON.

    gap recovered % = (ppl_quant - ppl_tweaked) / (ppl_quant - ppl_float) * 100

100 % means tweaking brought the quantized model back to float perplexity, 0 % means
no change, negative means it got worse. `markdown_table` and `format_value` live in
normtweak.common.tables (every layer formats tables) and are re-exported here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from normtweak.common.files import write_atomic
from normtweak.common.tables import format_value, markdown_table

__all__ = ["compare_rows", "format_value", "gap_recovered", "markdown_table", "write_json",
           "write_text"]


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
