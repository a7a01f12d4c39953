"""Per-block checkpoints of a tweak run, written atomically, so a run can resume.

A checkpoint folder holds `run.json` (what the run is: specs, calibration hash,
number of blocks) and `block_XXXX.safetensors` (the state of each finished block:
packed weights, scales, zeros, tweaked norms). The inputs of the next block are
not stored: resuming recomputes them by running the finished blocks, which is
cheap next to tweaking and deterministic.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from normtweak.common.files import atomic_file, write_atomic


def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """safetensors save_file, atomically (normtweak.common.files); disk full says what is kept."""
    try:
        with atomic_file(path) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                      metadata=metadata)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while writing {path}; earlier files are "
                          f"intact: free space, then run again (with --resume for checkpoints)") from err
        raise


def finished_blocks(folder: str | os.PathLike) -> list[int]:
    """Indices 0..k-1 of the leading blocks checkpointed in `folder` (empty if none)."""
    folder, done = Path(folder), 0
    while (folder / f"block_{done:04d}.safetensors").is_file():
        done += 1
    return list(range(done))


def describe_blocks(blocks: list[int]) -> str:
    """'checkpoints of blocks 0–7' (or 'no checkpoints')."""
    if not blocks:
        return "no checkpoints"
    if len(blocks) == 1:
        return f"a checkpoint of block {blocks[0]}"
    return f"checkpoints of blocks {blocks[0]}\u2013{blocks[-1]}"


class CheckpointDir:
    """The checkpoints of one tweak run."""

    def __init__(self, folder: str | os.PathLike, run_info: dict) -> None:
        self.folder = Path(folder)
        self.run_info = run_info

    @property
    def run_file(self) -> Path:
        return self.folder / "run.json"

    def block_file(self, index: int) -> Path:
        return self.folder / f"block_{index:04d}.safetensors"

    def start(self, resume: bool, overwrite: bool = False) -> int:
        """Prepare the folder; return how many leading blocks are already done.

        With `resume`, the stored run description must match this run's, else ValueError
        says what differs. Without it, finished checkpoints are never dropped silently:
        ValueError names them unless `overwrite` (then only our block files and run.json
        are removed; other files in the folder are left alone).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for torn in self.folder.glob(".block_*.tmp"):  # a write cut short by a crash
            torn.unlink()
        found = finished_blocks(self.folder)
        if resume and self.run_file.is_file():
            stored = json.loads(self.run_file.read_text())
            diff = sorted(k for k in set(stored) | set(self.run_info)
                          if stored.get(k) != self.run_info.get(k))
            if diff:
                raise ValueError(
                    f"cannot resume from {self.folder}: its checkpoints "
                    f"({describe_blocks(found)}) were made by a different run (differs in "
                    f"{diff}); use another --checkpoint-dir, or --overwrite (without "
                    f"--resume) to discard them and start over"
                )
            return len(found)
        if found and not overwrite:
            raise ValueError(
                f"--checkpoint-dir {self.folder} already holds {describe_blocks(found)}; pass "
                f"--resume to continue that run, or --overwrite to discard them and start over"
            )
        for old in self.folder.glob("block_*.safetensors"):
            old.unlink()
        write_atomic(self.run_file, json.dumps(self.run_info, indent=2, sort_keys=True))
        return 0

    def save_block(self, index: int, block: torch.nn.Module) -> None:
        atomic_save_file(block.state_dict(), self.block_file(index), {"block": str(index)})

    def load_block(self, index: int, block: torch.nn.Module) -> None:
        state = load_file(self.block_file(index))
        block.load_state_dict(state, strict=True)
