"""The one block walker: every pass over a model's blocks (quantize, tweak, per-layer deltas).

A pass captures block 0's inputs once (the calibration batches through the embeddings), then
for each block in order: fills it (lazy loading), moves it to the device, runs its steps
(normtweak.walk.state.Step), runs it over the batches to make the next block's inputs, moves
it back, and checkpoints it. A block already checkpointed is restored and replayed instead.
The device holds one block and one batch at a time; activations live in ActivationStores
(CPU memory while the budget allows, a memory-mapped file beyond it). It is the shape of
llm-compressor's SequentialPipeline and AutoRound's quantize_block loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from normtweak import arch, dist
from normtweak.calib.store import calibration_hash
from normtweak.config import RunSpec
from normtweak.walk.activations import ActivationBudget, ActivationStore, as_budget
from normtweak.walk.state import BlockResult, BlockState, Step, check_finite, run_all

BlockLoader = Callable[[int, nn.Module], None]


@dataclass
class Start:
    """Block 0's captured inputs (and, for a tweak, its float outputs), made once; a grid
    search shares one among its points.

    inputs: block 0's inputs per batch and each block's captured call arguments.
    targets0: block 0's float outputs per batch (None when not asked for).
    budget: the activation budget these stores draw on (runs using this start share it).
    """

    inputs: arch.BlockInputs
    targets0: ActivationStore | None
    calibration_hash: str
    batch_size: int
    budget: ActivationBudget


def as_input_ids(calibration) -> torch.Tensor:
    """Token ids [N, T] from a tensor or anything with `.input_ids` (a CalibrationSet)."""
    ids = getattr(calibration, "input_ids", calibration)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point:
        raise ValueError("calibration must be integer token ids [num_samples, seq_len] "
                         "or a CalibrationSet")
    return ids.long()


@torch.no_grad()
def prepare_start(model: nn.Module, calibration, batch_size: int, run: RunSpec = RunSpec(),
                  block_loader: BlockLoader | None = None, targets: bool = True) -> Start:
    """Capture block 0's inputs (this rank's share of the batches) and, with `targets`, its
    float outputs. The parts outside the blocks go to run.device for the capture and back
    where they were after it."""
    ids = as_input_ids(calibration)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and ids.numel() and int(ids.max()) >= rows:
        raise ValueError(f"calibration token id {int(ids.max())} is not in the model's "
                         f"vocabulary ({rows} embeddings): it was made with another tokenizer")
    full_hash, ids = calibration_hash(ids), dist.shard_samples(ids, batch_size)
    budget = as_budget(run.activation_budget)
    adapter = arch.get_adapter(model)
    outside = arch.device_of(adapter.get_embeddings(model))
    inputs = arch.capture_block_inputs(model, list(ids.split(batch_size)), device=run.device,
                                       hidden=budget.store())
    arch.move_outside_blocks(model, outside)
    check_finite(inputs.hidden, "embeddings")
    targets0 = None
    if targets:
        block = adapter.get_blocks(model)[0]
        if block_loader is not None:
            block_loader(0, block)
        home = arch.device_of(block)
        block.to(run.device)
        targets0, _ = run_all(block, inputs.hidden, inputs, 0, run.device, budget.store())
        block.to(home)
    return Start(inputs, targets0, full_hash, batch_size, budget)


class BlockPass:
    """Walk `model`'s blocks in order, running `steps` on each (see the module docstring).

    checkpoint: an object with start(resume, overwrite) -> number of leading blocks already
    done, save_block(index, block) and load_block(index, block) (normtweak.tweak.checkpoint;
    run.resume continues from it, run.overwrite discards what it holds);
    block_loader(index, block) fills a block's weights before its turn (lazy loading).
    """

    def __init__(self, model: nn.Module, steps: Sequence[Step], run: RunSpec = RunSpec(), *,
                 label: str = "block pass", checkpoint=None,
                 block_loader: BlockLoader | None = None) -> None:
        self.model, self.steps, self.run, self.label = model, list(steps), run, label
        self.checkpoint, self.block_loader = checkpoint, block_loader
        self.device = torch.device(run.device)

    def walk(self, start: Start | None = None, free_start: bool = False) -> list[BlockResult]:
        """Process every block; per-block results. start: the captured calibration inputs
        (None: no data flows, as for RTN); free_start: drop them after block 0 (nobody
        shares them). The checkpoint folder is released (its lock too) however the walk
        ends."""
        try:
            return self._walk(start, free_start)
        finally:
            if self.checkpoint is not None and hasattr(self.checkpoint, "close"):
                self.checkpoint.close()

    def _walk(self, start: Start | None, free_start: bool) -> list[BlockResult]:
        blocks = arch.get_adapter(self.model).get_blocks(self.model)
        done = 0
        if self.checkpoint is not None:
            done = self.checkpoint.start(self.run.resume, self.run.overwrite)
        hidden = start.inputs.hidden if start is not None else None
        new_store = (start.budget if start is not None else ActivationBudget()).store
        float_hidden, results = hidden, []
        bar = tqdm(range(len(blocks)), desc=self.label,
                   disable=not self.run.progress or not dist.is_main())
        for index in bar:
            block = blocks[index]
            if self.block_loader is not None:
                self.block_loader(index, block)
            home = arch.device_of(block)
            block.to(self.device)
            state = BlockState(index, len(blocks), block, start.inputs if start else None,
                               hidden, self.device, new_store, self.run.seed, self.run.progress,
                               float_hidden=float_hidden)
            t0 = time.perf_counter()
            if index < done:
                self._restore(state)
            else:
                self._process(state)
                state.seconds = time.perf_counter() - t0
            block.to(home)
            dist.check_same(block, f"block {index}")
            if self.checkpoint is not None and index >= done:
                self.checkpoint.save_block(index, block)
            results.append(state.result())
            bar.set_postfix(loss=_postfix(state))
            hidden, float_hidden = state.outputs, state.float_hidden
            if free_start and start is not None and index == 0:
                start.inputs.hidden, start.targets0 = [], None
        for step in self.steps:
            step.finish(self.model)
        return results

    def _process(self, state: BlockState) -> None:
        state.float_linears = dict(arch.block_linears(state.block))
        try:
            for step in self.steps:
                step.before(state)
            self._run(state)
            for step in self.steps:
                if step.after(state):
                    self._run(state)
        finally:
            for step in reversed(self.steps):
                step.end(state)

    def _restore(self, state: BlockState) -> None:
        for step in self.steps:
            step.resume(state)
        self.checkpoint.load_block(state.index, state.block)
        state.resumed = True
        if state.hidden is not None:
            state.outputs, _ = state.run(state.new_store())

    @staticmethod
    def _run(state: BlockState) -> None:
        """The block over every batch: the next block's inputs, and the loss against targets."""
        if state.hidden is not None:
            state.outputs, state.loss_after = state.run(state.new_store(), state.targets,
                                                        state.loss_fn)


def _postfix(state: BlockState) -> str:
    if state.resumed:
        return "restored from checkpoint"
    if state.loss_before is not None:
        return (f"{state.loss_before:.3g}->{state.loss_after:.3g}"
                + (" (kept start)" if state.kept_start else ""))
    return f"{state.loss_after:.3g}"
