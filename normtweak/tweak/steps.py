"""The steps of a tweak, block by block (normtweak.walk.Step), and the one place that orders them.

    Targets      the float block's outputs the tuned block is fitted to
    KernelNorms  from here on, normtweak's Triton norm modules (RunSpec.kernel_norms)
    Quantize     RTN / GPTQ (normtweak.quant.model), or Attach: an imported checkpoint's linears
    RoundScales  to the saved format's scale dtype
    KeepBetter   put the block back as it started when training raised its loss
    Tune         train the norms (the paper), and the linears' clipping and rounding (joint)

Adding a step (say AWQ-style scaling before Quantize) is a class here and a line in
`tweak_steps`.
"""

from __future__ import annotations

import torch
from torch import nn

from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.quant.model import Quantize, RoundScales, replace_with_shells, round_block_scales
from normtweak.tweak.loss import get_loss
from normtweak.tweak.train import norm_parameters, train_norms
from normtweak.walk.blockpass import Start
from normtweak.walk.state import BlockState, Step


class Targets(Step):
    """The float block's outputs: on the quantized path's inputs (the paper), or on the float
    model's own stream (target="float_input"), which this step then carries to the next
    block. Block 0's come from the shared start when it holds them."""

    def __init__(self, from_float: bool, start: Start | None) -> None:
        self.from_float, self.start = from_float, start

    def _float_outputs(self, state: BlockState, on):
        if state.index == 0 and self.start is not None and self.start.targets0 is not None:
            return self.start.targets0
        return state.run(state.new_store(), hidden=on)[0]

    def before(self, state: BlockState) -> None:
        state.targets = self._float_outputs(state, state.float_hidden if self.from_float
                                            else state.hidden)
        if self.from_float:
            state.float_hidden = state.targets

    def resume(self, state: BlockState) -> None:
        if self.from_float:
            state.float_hidden = self._float_outputs(state, state.float_hidden)

    def end(self, state: BlockState) -> None:
        state.targets = None  # free this block's targets before the next block makes its own


class Attach(Step):
    """Take an imported checkpoint's QuantLinears for the block instead of quantizing it
    (normtweak.loading.foreign); `spec` describes them (normtweak.io.imported_spec)."""

    def __init__(self, model: nn.Module, linears: dict, spec: QuantSpec) -> None:
        self.model, self.linears, self.spec = model, linears, spec

    def before(self, state: BlockState) -> None:
        from normtweak.loading.foreign import attach_to_block

        names = attach_to_block(self.model, state.block, self.linears)
        state.quantized = {n: state.block.get_submodule(n) for n in names}

    def resume(self, state: BlockState) -> None:
        replace_with_shells(state.block, self.spec)


class KernelNorms(Step):
    """From here to the end of the block's turn its norms are normtweak's (Triton) modules."""

    def __init__(self, offset: float) -> None:
        self.offset, self._context = offset, None

    def before(self, state: BlockState) -> None:
        from normtweak.studies.norms import kernel_norms

        self._context = kernel_norms(state.block, True, self.offset)
        self._context.__enter__()

    def end(self, state: BlockState) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)


class KeepBetter(Step):
    """Keep a block's training only if it lowered the block's loss on the calibration set;
    else put its norms and quantized linears back as they were before training."""

    def before(self, state: BlockState) -> None:
        self.norms = [p.detach().clone() for p in norm_parameters(state.block)]
        self.quantized = dict(state.quantized)

    def after(self, state: BlockState) -> bool:
        if not state.loss_after > state.loss_before:
            return False
        with torch.no_grad():
            for p, saved in zip(norm_parameters(state.block), self.norms):
                p.copy_(saved)
        for name, q in self.quantized.items():
            state.block.set_submodule(name, q)
        state.kept_start = True
        return True

    def end(self, state: BlockState) -> None:
        self.norms, self.quantized = [], {}


class Tune(Step):
    """Train the block: Adam on its norm weights at lr_l = lr * (1 + scale * l / L) (the paper's
    step 4) and, with tweak.quant_params, signed steps on its linears' clipping and rounding
    (normtweak.quant.tunable); the loss before training is recorded first."""

    def __init__(self, tweak: TweakSpec, scale_dtype: torch.dtype | None = None,
                 compile: bool = False) -> None:
        self.tweak, self.scale_dtype, self.compile = tweak, scale_dtype, compile
        self.loss_fn = get_loss(tweak.loss if tweak.loss != "none" else "dist")

    def before(self, state: BlockState) -> None:
        from normtweak.quant.tunable import make_tunable, to_quant_linear

        tweak = self.tweak
        state.lr = tweak.block_lr(state.index, state.num_blocks)
        state.loss_fn = self.loss_fn
        if not tweak.enabled:
            return
        state.loss_before = state.run(targets=state.targets, loss_fn=self.loss_fn)[1]
        gen = torch.Generator().manual_seed(state.seed * 100_003 + state.index)
        tunables = {}
        if tweak.quant_params != "none":
            tunables = {n: make_tunable(q, state.float_linears[n].weight.detach().clone(),
                                        tweak.quant_params == "clip_round")
                        for n, q in state.quantized.items()}
        for name, t in tunables.items():
            state.block.set_submodule(name, t)
        try:
            state.best_step = train_norms(state, tweak, gen, list(tunables.values()),
                                          compile=self.compile)
        finally:
            for name, t in tunables.items():
                state.block.set_submodule(name, to_quant_linear(t, state.quantized[name]))
            round_block_scales({n: state.block.get_submodule(n) for n in tunables},
                               self.scale_dtype, state.index)


def tweak_steps(model: nn.Module, quant: QuantSpec, tweak: TweakSpec, run: RunSpec,
                start: Start | None, imported: dict | None = None) -> list[Step]:
    """The steps of a tweak, in the order each block takes them."""
    from normtweak import arch

    steps: list[Step] = [Targets(tweak.target == "float_input", start)]
    if run.kernel_norms:  # everything after the targets runs through the kernels
        steps.append(KernelNorms(arch.get_adapter(model).norm_offset))
    steps.append(Quantize(quant) if imported is None else Attach(model, imported, quant))
    scale_dtype = getattr(torch, run.scale_dtype) if run.scale_dtype else None
    if scale_dtype is not None:
        steps.append(RoundScales(scale_dtype))
    if tweak.enabled and tweak.keep_better:
        steps.append(KeepBetter())
    steps.append(Tune(tweak, scale_dtype, run.compile))
    return steps
