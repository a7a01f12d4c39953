"""One block's turn in the pipeline: quantize it (or attach imported linears), train its
norms, and run it over the calibration batches.

`train_norms` is the paper's step 4: Adam on the block's norm weights (and, with
TweakSpec.quant_params, signed steps on its clipping/rounding) to minimise
loss(Y_f, block_q(X_l)). `run_all` runs a block over every batch and stops at the first
NaN/Inf output, naming the block and batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from normtweak import arch, dist
from normtweak.quant import quantize_block
from normtweak.quant.model import set_submodule
from normtweak.quant.scales import round_module_scales
from normtweak.tweak.loss import get_loss
from normtweak.tweak.qparams import make_tunable, sign_sgd_step, to_quant_linear


class NonFiniteActivationError(ValueError):
    """NaN or Inf appeared in a block's output during the pipeline."""


@dataclass
class BlockResult:
    index: int
    lr: float
    loss_before: float  # tweak loss of the quantized block before training its norms
    loss_after: float  # ... and after
    seconds: float
    resumed: bool = False
    kept_start: bool = False  # training made the block worse, so its start was restored
    best_step: int | None = None  # with TweakSpec.best_step: the step kept (0: the start)


def process_block(block, index, num_blocks, hidden, targets, inputs, quant, tweak, device, seed,
                  new_store, true_sequential=False, attach=None, scale_dtype=None,
                  progress=False):
    """Quantize one block (or attach its imported QuantLinears), tweak its norms, and return
    (next inputs in a store from `new_store()`, BlockResult).

    With tweak.keep_better, a block whose loss on the calibration set is higher after
    training than before is put back as it started (norms and quantized linears)."""
    tune = tweak.enabled and tweak.quant_params != "none"
    floats = {n: lin.weight.detach().clone() for n, lin in arch.block_linears(block)} if tune else {}
    if attach is not None:
        quantized = attach(block)
    else:
        quantized = quantize_block(block, quant,
                                   lambda: run_all(block, hidden, inputs, index, device),
                                   true_sequential)
    _round_scales(quantized, scale_dtype, index)
    lr = tweak.block_lr(index, num_blocks)
    loss_fn = get_loss(tweak.loss if tweak.loss != "none" else "dist")
    # Plain quantization: the loss before equals the loss after; skip a pass over the data.
    before = mean_loss(block, hidden, targets, inputs, index, device, loss_fn) \
        if tweak.enabled else None
    start = _norm_state(block) if tweak.enabled and tweak.keep_better else None
    if tweak.enabled:
        gen = torch.Generator().manual_seed(seed * 100_003 + index)
        tunables = {n: make_tunable(q, floats[n], tweak.quant_params == "clip_round")
                    for n, q in quantized.items()} if tune else {}
        for name, t in tunables.items():
            set_submodule(block, name, t)
        try:
            best_step = train_norms(block, hidden, targets, lambda h: inputs.extra(index, h.shape),
                                    lr, tweak, loss_fn, device, gen, list(tunables.values()),
                                    progress=progress and f"block {index}")
        finally:
            for name, t in tunables.items():
                set_submodule(block, name, to_quant_linear(t, quantized[name]))
            _round_scales({n: block.get_submodule(n) for n in tunables}, scale_dtype, index)
    nxt, after = run_all(block, hidden, inputs, index, device, new_store(), targets, loss_fn)
    kept_start = start is not None and after > before
    if kept_start:
        _restore(block, start, quantized if tune else {})
        nxt, after = run_all(block, hidden, inputs, index, device, new_store(), targets, loss_fn)
    return nxt, BlockResult(index, lr, after if before is None else before, after, 0.0,
                            kept_start=kept_start, best_step=best_step if tweak.enabled else None)


def _norm_state(block: nn.Module) -> list[torch.Tensor]:
    """Copies of the block's norm parameters (to restore them with `_restore`)."""
    return [p.detach().clone() for p in norm_parameters(block)]


def _restore(block: nn.Module, norms: list[torch.Tensor], linears: dict) -> None:
    """Put back the norm parameters saved by `_norm_state` and the given QuantLinears."""
    with torch.no_grad():
        for p, saved in zip(norm_parameters(block), norms):
            p.copy_(saved)
    for name, q in linears.items():
        set_submodule(block, name, q)


def _round_scales(quantized: dict, dtype, index: int) -> None:
    """Round the scales of a block's QuantLinears to the target format's dtype (if any)."""
    if dtype is not None:
        for name, q in quantized.items():
            round_module_scales(q, dtype, f"block {index}: {name}")


def norm_parameters(block: nn.Module) -> list[nn.Parameter]:
    """The parameters tweaking trains: every weight and bias of the block's norm modules."""
    params = []
    for _, norm in arch.block_norms(block):
        params += [p for p in norm.parameters(recurse=False)]
    return params


def train_norms(block, hidden, targets, extra_of, lr, tweak, loss_fn, device, generator,
                tunables=(), progress: str | bool = False) -> int | None:
    """Adam on the block's norm parameters, `tweak.iters` passes over the batches.

    With tweak.best_step the parameters end as they were at the lowest minibatch loss, and
    the step they come from is returned (0: the start); else None.

    tunables: TunableQuantLinears of the block whose clipping/rounding train alongside,
    by signed steps of tweak.quant_lr (default min(1/steps, 2e-2)) decayed linearly to 0.
    progress: a label to show the steps and the loss under (a bar that appears once the
    block has trained for a few seconds); False: nothing shown.
    """
    norms = norm_parameters(block)
    if not norms:
        raise ValueError(f"block {type(block).__name__} has no norm parameters to tweak")
    quant_params = [p for t in tunables for p in t.tuned_parameters()]
    flags = {id(p): p.requires_grad for p in block.parameters()}
    for p in block.parameters():
        p.requires_grad_(False)
    for p in (norms if lr > 0 else []) + quant_params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(norms, lr=lr) if lr > 0 else None
    steps, step = tweak.iters * len(hidden), 0
    quant_lr = tweak.quant_lr if tweak.quant_lr is not None else min(1.0 / steps, 2e-2)
    best = BestStep(norms + quant_params) if tweak.best_step else None
    bar = tqdm(total=steps, desc=progress or "", leave=False, delay=3, unit="step",
               disable=not progress or not dist.is_main())
    try:
        with torch.enable_grad():
            for _ in range(tweak.iters):
                for b in torch.randperm(len(hidden), generator=generator).tolist():
                    x = hidden[b].to(device)
                    y = arch.run_block(block, x, extra_of(x))
                    loss = loss_fn(targets[b].to(device), y)
                    if best is not None:  # the parameters as they are before this step
                        best.offer(dist.mean_over_ranks(float(loss), 1))
                    block.zero_grad(set_to_none=True)
                    loss.backward()
                    # DDP rule (global batch = ranks x batch): average before any step.
                    dist.average_gradients(norms + quant_params)
                    if opt is not None:
                        opt.step()
                    sign_sgd_step(quant_params, quant_lr * (1 - step / steps))
                    for t in tunables:
                        t.clamp_()
                    step += 1
                    bar.update()
                    bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
        if best is not None:
            best.restore()
    finally:
        bar.close()
        for p in block.parameters():
            p.requires_grad_(flags.get(id(p), False))
    return best.step if best is not None else None


class BestStep:
    """Remember the parameters at the lowest loss offered so far; put them back on restore.

    AutoRound's best-iteration rule: each training step offers its minibatch loss, computed
    with the parameters as they were before the step's update."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.loss = float("inf")
        self.saved: list[torch.Tensor] | None = None
        self.step = -1  # the step whose parameters are saved (0: the start)
        self._offers = 0

    def offer(self, loss: float) -> None:
        if loss < self.loss:
            self.loss, self.step = loss, self._offers
            self.saved = [p.detach().clone() for p in self.params]
        self._offers += 1

    @torch.no_grad()
    def restore(self) -> None:
        if self.saved is not None:
            for p, saved in zip(self.params, self.saved):
                p.copy_(saved)


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


@torch.no_grad()
def mean_loss(block, hidden, targets, inputs, index, device, loss_fn) -> float:
    return run_all(block, hidden, inputs, index, device, None, targets, loss_fn)[1]


def check_finite(tensors, where: str, first_batch: int = 0) -> None:
    for b, t in enumerate(tensors, first_batch):
        if not torch.isfinite(t).all():
            raise NonFiniteActivationError(
                f"NaN/Inf in the output of {where} (calibration batch {b}); stopping. "
                f"Checkpoints of earlier blocks are kept: lower the learning rate or check the "
                f"model/calibration data, then resume."
            )
