"""Training one block (the paper's step 4): Adam on its norm weights, and, in the joint mode,
signed steps on its linears' clipping and rounding (normtweak.quant.tunable), to minimise
loss(Y_f, block_q(X_l)) over the calibration batches.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from tqdm.auto import tqdm

from normtweak import arch, dist
from normtweak.config import TweakSpec
from normtweak.quant.tunable import sign_sgd_step
from normtweak.walk.state import BlockState


def norm_parameters(block: nn.Module) -> list[nn.Parameter]:
    """The parameters tweaking trains: every weight and bias of the block's norm modules."""
    params = []
    for _, norm in arch.block_norms(block):
        params += [p for p in norm.parameters(recurse=False)]
    return params


@functools.cache
def compiled_run_block():
    """arch.run_block through torch.compile: one wrapper for the process, so blocks of the
    same architecture reuse its graph (the block's parameters are the graph's inputs)."""
    return torch.compile(arch.run_block)


def train_norms(state: BlockState, tweak: TweakSpec, generator: torch.Generator,
                tunables=(), compile: bool = False) -> int | None:
    """Adam on the norm parameters of `state.block` at state.lr, to minimise
    state.loss_fn(targets, block(hidden)) over `tweak.iters` passes of the batches, in an
    order drawn from `generator`.

    With tweak.best_step the parameters end as they were at the lowest minibatch loss, and
    the step they come from is returned (0: the start); else None.

    tunables: TunableQuantLinears of the block whose clipping/rounding train alongside,
    by signed steps of tweak.quant_lr (default min(1/steps, 2e-2)) decayed linearly to 0.
    With state.progress, a bar shows the steps and the loss once the block has trained for a
    few seconds. tweak.train_dtype "bfloat16": the block's forward in the training steps runs
    under bf16 autocast (AutoRound's default on CPUs with bf16); the loss, the parameters and
    every pass that makes targets or the next block's inputs stay float32. compile: the
    training steps' block forward (and backward) through torch.compile (RunSpec.compile).
    """
    block, hidden, targets, lr, device = (state.block, state.hidden, state.targets, state.lr,
                                          state.device)
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
    bar = tqdm(total=steps, desc=f"block {state.index}", leave=False, delay=3, unit="step",
               disable=not state.progress or not dist.is_main())
    forward = compiled_run_block() if compile else arch.run_block
    autocast = torch.autocast(device.type, dtype=getattr(torch, tweak.train_dtype),
                              enabled=tweak.train_dtype != "float32")
    try:
        with torch.enable_grad():
            for _ in range(tweak.iters):
                for b in torch.randperm(len(hidden), generator=generator).tolist():
                    x = hidden[b].to(device)
                    with autocast:
                        y = forward(block, x, state.extra(x.shape))
                    loss = state.loss_fn(targets[b].to(device), y.float())
                    if best is not None:  # the parameters as they are before this step
                        best.offer(dist.mean_over_ranks(float(loss.detach()), 1))
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
                    bar.set_postfix(loss=f"{float(loss.detach()):.4g}", refresh=False)
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
