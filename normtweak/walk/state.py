"""One block's turn in a block pass: the state the steps read and write, and the step protocol.

A `Step` does one thing to the block whose turn it is (quantize it, attach imported linears,
round its scales, train it, keep its start if training made it worse, record its outputs):

  before(state)   in order, before the block is run over the calibration batches;
  after(state)    in order, after that run; True means the step changed the block, and the
                  run is made again (keep-better restoring the start does this);
  end(state)      in reverse order, when the block's turn is over (free, leave contexts);
  resume(state)   a block restored from a checkpoint: give it the module structure the
                  checkpoint holds (quantized shells) and keep any stream it owns going;
  finish(model)   after the last block (quantize the head, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from normtweak import arch, dist


class NonFiniteActivationError(ValueError):
    """NaN or Inf appeared in a block's output during a block pass."""


@dataclass
class BlockResult:
    index: int
    lr: float
    loss_before: float  # tweak loss of the quantized block before training
    loss_after: float  # ... and after
    seconds: float
    resumed: bool = False
    kept_start: bool = False  # training made the block worse, so its start was restored
    best_step: int | None = None  # with TweakSpec.best_step: the step kept (0: the start)


@dataclass
class BlockState:
    """What the steps of one block's turn share.

    hidden: the block's inputs per batch on the processed path (None when nothing was
    captured: RTN needs no data); float_hidden: the float model's own stream, kept by a
    step that needs it; outputs: the block's outputs per batch once it has run (the next
    block's `hidden`); targets / loss_fn: what the run's loss is measured against.
    """

    index: int
    num_blocks: int
    block: nn.Module
    inputs: arch.BlockInputs | None
    hidden: Sequence[torch.Tensor] | None
    device: torch.device
    new_store: Callable[[], Sequence]
    seed: int = 0
    progress: bool = False
    float_hidden: Sequence[torch.Tensor] | None = None
    float_linears: dict[str, nn.Linear] = field(default_factory=dict)
    quantized: dict[str, nn.Module] = field(default_factory=dict)
    targets: Sequence[torch.Tensor] | None = None
    loss_fn: Callable | None = None
    outputs: Sequence[torch.Tensor] | None = None
    lr: float = math.nan
    loss_before: float | None = None
    loss_after: float = math.nan
    kept_start: bool = False
    best_step: int | None = None
    resumed: bool = False
    seconds: float = 0.0

    def run(self, out=None, targets=None, loss_fn=None, hidden=None):
        """Run this block over `hidden` (default: its inputs); (out, mean loss or nan)."""
        return run_all(self.block, self.hidden if hidden is None else hidden, self.inputs,
                       self.index, self.device, out, targets, loss_fn)

    def extra(self, shape) -> tuple[tuple, dict]:
        """The captured call arguments (masks, positions) of this block for a batch shape."""
        return self.inputs.extra(self.index, shape)

    def result(self) -> BlockResult:
        if self.resumed:
            return BlockResult(self.index, self.lr, math.nan, math.nan, 0.0, resumed=True)
        before = self.loss_after if self.loss_before is None else self.loss_before
        return BlockResult(self.index, self.lr, before, self.loss_after, self.seconds,
                           kept_start=self.kept_start, best_step=self.best_step)


class Step:
    """A per-block step of a block pass (see the module docstring); every hook is optional."""

    def before(self, state: BlockState) -> None:
        pass

    def after(self, state: BlockState) -> bool:
        return False

    def end(self, state: BlockState) -> None:
        pass

    def resume(self, state: BlockState) -> None:
        pass

    def finish(self, model: nn.Module) -> None:
        pass


@torch.no_grad()
def run_all(block, hidden, inputs, index, device, out=None, targets=None, loss_fn=None):
    """Run block `index` over every batch; return (out, mean loss against targets or nan).

    out: an ActivationStore the outputs are appended to (None: outputs are dropped, as
    for GPTQ's Hessian pass). Stops at the first NaN/Inf output, naming the block.
    """
    total = 0.0
    for b, h in enumerate(hidden):
        y = arch.run_block(block, h.to(device, non_blocking=True), inputs.extra(index, h.shape))
        check_finite([y], f"block {index}", b)
        if targets is not None:
            total += float(loss_fn(targets[b].to(device), y))
        if out is not None:
            out.append(y)
    return out, (dist.mean_over_ranks(total, len(hidden)) if targets is not None else float("nan"))


def check_finite(tensors, where: str, first_batch: int = 0) -> None:
    for b, t in enumerate(tensors, first_batch):
        if not torch.isfinite(t).all():
            raise NonFiniteActivationError(
                f"NaN/Inf in the output of {where} (calibration batch {b}); stopping. "
                f"Checkpoints of earlier blocks are kept: lower the learning rate or check the "
                f"model/calibration data, then resume."
            )
