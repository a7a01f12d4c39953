"""What a tweak achieved, in perplexity: the float model, the plainly quantized start and the
tweaked result, scored on the first few windows of a validation split."""

from __future__ import annotations

import copy
from dataclasses import asdict, replace

from torch import nn


class ValidationScores:
    """Perplexity of several models on the first `windows` windows of `text`'s validation
    split, one document at a time (nothing is scored when windows is 0)."""

    def __init__(self, tokenizer, text: str, windows: int, device: str = "cpu",
                 echo=print) -> None:
        self.tokenizer, self.text, self.windows, self.device = tokenizer, text, windows, device
        self.echo = echo
        self.on = windows > 0
        self.results: dict[str, dict] = {}

    def add(self, key: str, model: nn.Module, label: str | None = None) -> None:
        """Score `model` as `key` ("float", "quant", "tweaked")."""
        if not self.on:
            return
        from normtweak.dist import on_main
        from normtweak.evaluate import split_perplexity

        label = label or key
        self.echo(f"{label}: perplexity on {self.windows} windows of {self.text}/validation ...")
        r = on_main(split_perplexity, model, self.tokenizer, self.text, "validation",
                    max_windows=self.windows, device=self.device)
        self.results[key] = {"label": label, **asdict(r)}

    def record(self) -> dict:
        return {"text": self.text, "split": "validation", "windows": self.windows,
                "ppl": {k: v["ppl"] for k, v in self.results.items()}}

    def summary(self) -> str:
        """One line: float | quantized | tweaked perplexity and the gap recovered."""
        from normtweak.evaluate.report import gap_recovered

        r = {k: v["ppl"] for k, v in self.results.items()}
        gap = (gap_recovered(r["float"], r["quant"], r["tweaked"]) if r["quant"] != r["float"]
               else float("nan"))
        window = self.results["float"]["window"]
        return (f"validation perplexity ({self.text}, {self.windows} x {window}-token windows): "
                f"float {r['float']:.2f} | {self.results['quant']['label']} {r['quant']:.2f} | "
                f"tweaked {r['tweaked']:.2f} ({gap:.0f}% of the gap recovered)")


def plain_copy(model: nn.Module, ids, quant, imported: dict | None, run,
               batch_size: int) -> nn.Module:
    """The start the tweak improves on: a copy of the float model quantized plainly, or
    holding an imported checkpoint's linears."""
    from normtweak.quant.model import quantize_model

    plain = copy.deepcopy(model)
    if imported is not None:
        for name, q in imported.items():
            plain.set_submodule(name, copy.deepcopy(q))
        return plain
    return quantize_model(plain, quant, calibration=ids, run=replace(run, progress=False,
                                                                      checkpoint_dir=None,
                                                                      resume=False),
                          batch_size=batch_size)
