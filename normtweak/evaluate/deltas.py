"""Fast evaluation: per-block output mean and variance, and their drift after quantization.

`layer_stats(model, input_ids, device)` walks the blocks one at a time on a few
calibration samples (block l gets block l-1's output of the *same* model) and returns,
per block, the mean and variance of all elements of its output (float64). Comparing a
quantized (or tweaked) model's stats with the float model's (`layer_deltas`) shows where
the distribution drifts, which is what norm tweaking corrects; `plot_deltas` draws it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from normtweak.common.files import atomic_file
from normtweak.config import RunSpec
from normtweak.walk import BlockPass, Step, prepare_start


class _OutputStats(Step):
    """Record (mean, population variance) of each block's output, in float64."""

    def __init__(self) -> None:
        self.stats: list[tuple[float, float]] = []

    def after(self, state) -> bool:
        hidden = state.outputs
        total = sum(h.numel() for h in hidden)
        s1 = sum(h.double().sum() for h in hidden)
        s2 = sum(h.double().square().sum() for h in hidden)
        mean = float(s1 / total)
        self.stats.append((mean, float(s2 / total) - mean * mean))
        return False


@torch.no_grad()
def layer_stats(
    model: nn.Module,
    input_ids: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
) -> list[tuple[float, float]]:
    """(mean, variance) of each block's output over all its elements, block order.

    input_ids: LongTensor [N, T] (no padding). The blocks are walked in order
    (normtweak.walk.BlockPass: each moved to `device`, run, moved back). Variance is the
    population variance (divide by the element count), accumulated in float64 across
    batches of `batch_size` rows.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids must be [N, T] with N >= 1, got {tuple(input_ids.shape)}")
    run = RunSpec(device=str(device), progress=False)
    start = prepare_start(model, input_ids.long(), batch_size, run, targets=False)
    stats = _OutputStats()
    BlockPass(model, [stats], run).walk(start, free_start=True)
    return stats.stats


def layer_deltas(
    reference_stats: list[tuple[float, float]], other_stats: list[tuple[float, float]]
) -> list[dict[str, float]]:
    """Per block: the reference and other mean/var and other - reference (d_mean, d_var)."""
    if len(reference_stats) != len(other_stats):
        raise ValueError(
            f"stats of {len(reference_stats)} and {len(other_stats)} blocks: compare models "
            "of the same architecture"
        )
    rows = []
    for layer, ((m0, v0), (m1, v1)) in enumerate(zip(reference_stats, other_stats)):
        rows.append({"layer": layer, "mean_ref": m0, "mean": m1, "d_mean": m1 - m0,
                     "var_ref": v0, "var": v1, "d_var": v1 - v0})
    return rows


def plot_deltas(
    deltas: dict[str, list[dict[str, float]]],
    path: str | Path,
    title: str = "Per-block output drift vs float",
) -> Path:
    """PNG of d_mean and d_var per block, one line per label (e.g. 'rtn', 'tweaked').

    deltas: label -> `layer_deltas(...)` rows. Written atomically; returns the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in deltas.items():
        layers = [r["layer"] for r in rows]
        axes[0].plot(layers, [r["d_mean"] for r in rows], marker="o", ms=3, label=label)
        axes[1].plot(layers, [r["d_var"] for r in rows], marker="o", ms=3, label=label)
    for ax, name in zip(axes, ("Δ mean", "Δ variance")):
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("block")
        ax.set_ylabel(f"{name} of block output")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
