"""Where a tweak's error is, block by block: the calibration loss of every block before and
after its training, and which blocks keep_better put back (from the run's own record)."""

from __future__ import annotations

import json
from pathlib import Path

from normtweak.common.files import atomic_file


def block_records(folder: str | Path) -> list[dict]:
    """The per-block results a tweak saved with its model (normtweak_quantization.json's
    tweak_result, or a `run`'s .run.json report)."""
    path = Path(folder)
    if path.is_dir():
        path = path / "normtweak_quantization.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no normtweak_quantization.json (a folder written by "
                                f"`normtweak tweak` or `run`) and not a .run.json report")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    blocks = (data.get("tweak_result") or {}).get("blocks") or data.get("blocks")
    if not blocks:
        raise ValueError(f"{path} holds no per-block results: the model was quantized, not "
                         f"tweaked (or tweaked by a normtweak older than 0.1)")
    return blocks


def block_table(blocks: list[dict]) -> str:
    """A Markdown table: block, lr, loss before -> after, change %, put back."""
    lines = ["| block | lr | loss before | loss after | change % | note |",
             "|---|---|---|---|---|---|"]
    for b in blocks:
        before, after = b["loss_before"], b["loss_after"]
        change = (after - before) / before * 100 if before else float("nan")
        note = ("restored from checkpoint" if b.get("resumed") else
                "put back (training raised its loss)" if b.get("kept_start") else "")
        lines.append(f"| {b['index']} | {b['lr']:.3g} | {before:.4g} | {after:.4g} | "
                     f"{change:+.1f} | {note} |")
    return "\n".join(lines)


def plot_blocks(blocks: list[dict], path: str | Path, title: str = "") -> Path:
    """PNG: each block's calibration loss before and after training (log scale), blocks that
    were put back marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = [b["index"] for b in blocks]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.plot(index, [b["loss_before"] for b in blocks], "o-", ms=3, label="before training")
    ax.plot(index, [b["loss_after"] for b in blocks], "o-", ms=3, label="after training")
    back = [b for b in blocks if b.get("kept_start")]
    if back:
        ax.plot([b["index"] for b in back], [b["loss_after"] for b in back], "x", ms=9,
                color="crimson", label="put back (keep_better)")
    ax.set_yscale("log")
    ax.set_xlabel("block")
    ax.set_ylabel("calibration loss")
    ax.set_title(title or "per-block loss of the tweak")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
