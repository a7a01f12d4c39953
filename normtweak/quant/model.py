"""Quantize a transformer block, or a whole model, by replacing its Linears by QuantLinears.

`quantize_block` quantizes one block; `Quantize` and `RoundScales` are the block-pass steps
(normtweak.walk) the tweak composes; `quantize_model` is plain RTN / GPTQ over a whole model
(no tweaking), walked block by block, one block on the device at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

from normtweak import arch, dist
from normtweak.config import QuantSpec, RunSpec, group_fallback_note
from normtweak.quant.gptq import GPTQ
from normtweak.quant.linear import QuantLinear
from normtweak.quant.rtn import rtn_quantize
from normtweak.quant.scales import round_module_scales
from normtweak.walk.state import BlockState, Step


def check_model(model: nn.Module, spec: QuantSpec, progress: bool = True) -> None:
    """Before any work: every weight is finite (naming the first that is not), and `spec` fits
    every block linear; say once (stderr) which layers take a fallback group size."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not t.is_meta and not torch.isfinite(t).all():
            raise ValueError(f"{name} holds NaN/Inf values: the model's weights are damaged; "
                             f"nothing was quantized")
    say_group_fallbacks(spec, arch.get_adapter(model).get_blocks(model), progress)


def say_group_fallbacks(spec: QuantSpec, blocks, progress: bool = True) -> None:
    """Check that `spec` fits every block linear; say once (stderr) which layers take a
    fallback group size (QuantSpec.group_fallback)."""
    layers = [(f"block {i}: {name}", lin.in_features)
              for i, block in enumerate(blocks) for name, lin in arch.block_linears(block)]
    note = group_fallback_note(spec, layers)
    if note and progress and dist.is_main():
        print(note, file=sys.stderr, flush=True)


def replace_with_shells(root: nn.Module, spec: QuantSpec, names: list[str] | None = None) -> None:
    """Replace nn.Linears under `root` (the block linears, or `names`) by empty QuantLinears.

    The shells have the right buffer shapes; `load_state_dict` fills them.
    """
    targets = [(n, root.get_submodule(n)) for n in names] if names is not None else arch.block_linears(root)
    for name, lin in targets:
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"saved model lists {name!r} as quantized, but the architecture has "
                             f"a {type(lin).__name__} there")
        device = lin.weight.device if lin.weight.device.type != "meta" else None
        shell = QuantLinear(lin.in_features, lin.out_features, spec, bias=lin.bias is not None,
                            device=device)
        root.set_submodule(name, shell)


def rtn_linear(linear: nn.Linear, spec: QuantSpec, name: str = "linear") -> QuantLinear:
    """A QuantLinear holding the RTN quantization of `linear` (its weight is not changed)."""
    spec = spec.for_layer(name, linear.in_features)
    codes, scale, zero = rtn_quantize(linear.weight, spec)
    return QuantLinear.from_linear(linear, codes, scale, zero, spec)


def gptq_linear(gptq: GPTQ, spec: QuantSpec) -> QuantLinear:
    """A QuantLinear holding the GPTQ quantization of the layer `gptq` collected inputs for."""
    spec = spec.for_layer("gptq", gptq.layer.in_features)
    r = gptq.quantize(spec)
    return QuantLinear.from_linear(gptq.layer, r.codes, r.scale, r.zero, spec, g_idx=r.g_idx)


def quantize_block(
    block: nn.Module,
    spec: QuantSpec,
    forward_calibration: Callable[[], object] | None = None,
) -> dict[str, QuantLinear]:
    """Replace every nn.Linear in `block` by a QuantLinear, in place; return them by name.

    RTN ignores `forward_calibration`. GPTQ hooks the block's linears, calls
    `forward_calibration()` (which must run the float block over all calibration
    inputs), and quantizes every linear from the float block's inputs.
    spec.true_sequential: GPTQ quantizes the linears in groups that share one input (e.g.
    q/k/v, o, gate/up, down), each from the inputs it gets once the groups before it
    are quantized; one more `forward_calibration()` call per group.
    """
    linears = arch.block_linears(block)
    for name, lin in linears:
        spec.check_layer(name, lin.in_features)
    if spec.method == "rtn":
        quantized = {name: rtn_linear(lin, spec, name) for name, lin in linears}
        for name, q in quantized.items():
            block.set_submodule(name, q)
        return quantized
    if forward_calibration is None:
        raise ValueError("GPTQ needs forward_calibration: a callable running the block "
                         "over the calibration inputs")
    gptqs, first_inputs = _collect_hessians(linears, forward_calibration)
    groups = _input_groups([n for n, _ in linears], first_inputs) if spec.true_sequential else None
    del first_inputs
    todo = groups[0] if groups else [n for n, _ in linears]
    quantized = {}
    for group_index in range(len(groups) if groups else 1):
        if group_index > 0:
            todo = groups[group_index]
            gptqs, _ = _collect_hessians([(n, block.get_submodule(n)) for n in todo],
                                         forward_calibration)
        for name in todo:
            quantized[name] = gptq_linear(gptqs[name], spec)
            block.set_submodule(name, quantized[name])
    return {name: quantized[name] for name, _ in linears}


def _collect_hessians(
    linears: list[tuple[str, nn.Linear]], forward_calibration: Callable[[], None]
) -> tuple[dict[str, GPTQ], dict[str, torch.Tensor]]:
    """Run forward_calibration with input hooks: a GPTQ (Hessian) per linear, and the
    tensor object each linear got first (to find linears that share an input)."""
    gptqs = {name: GPTQ(lin) for name, lin in linears}
    first: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inp, out):
            gptqs[name].add_batch(inp[0])
            first.setdefault(name, inp[0])

        return record

    handles = [lin.register_forward_hook(hook(name)) for name, lin in linears]
    try:
        with torch.no_grad():
            forward_calibration()
    finally:
        for h in handles:
            h.remove()
    for g in gptqs.values():  # under torchrun: H over every rank's rows, the same on each rank
        g.hessian, g.nsamples = dist.weighted_mean(g.hessian, g.nsamples)
    for name, g in gptqs.items():
        if g.nsamples == 0:
            raise ValueError(f"GPTQ: linear {name!r} saw no input during forward_calibration")
    return gptqs, first


def _input_groups(names: list[str], first_inputs: dict[str, torch.Tensor]) -> list[list[str]]:
    """Consecutive linears (module order) fed the very same tensor form one group."""
    groups: list[list[str]] = []
    for name in names:
        if groups and first_inputs[name] is first_inputs[groups[-1][0]]:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def quantize_head(model: nn.Module, spec: QuantSpec) -> QuantLinear | None:
    """RTN-quantize the output head (an nn.Linear) in place; None if there is none.

    The head is quantized with RTN whatever spec.method (its inputs are not collected).
    A head tied to the input embeddings is untied: the embeddings stay float.
    """
    head = arch.get_adapter(model).get_head(model)
    if not isinstance(head, nn.Linear):
        return None
    name = next(n for n, m in model.named_modules() if m is head)
    q = rtn_linear(head, spec, name)
    model.set_submodule(name, q)
    return q


def _calibration_batches(calibration: torch.Tensor | None, batch_size: int) -> list:
    if calibration is None:
        raise ValueError("GPTQ needs calibration token ids [N, T] (e.g. CalibrationSet.input_ids)")
    if calibration.dim() != 2 or calibration.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"calibration must be integer token ids [N, T], got "
                         f"{calibration.dtype} {tuple(calibration.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return list(calibration.long().split(batch_size))


@torch.no_grad()
def quantize_model(model: nn.Module, spec: QuantSpec, calibration: torch.Tensor | None = None,
                   run: RunSpec = RunSpec(), batch_size: int = 1) -> nn.Module:
    """Replace every block Linear (and the head if spec.quantize_head) by a QuantLinear.

    GPTQ walks the blocks in order (normtweak.walk.BlockPass): each block's calibration
    inputs are the previous quantized block's outputs, `batch_size` samples per forward
    pass. Each block is moved to run.device, processed, moved back.
    """
    from normtweak.walk import BlockPass, prepare_start

    check_model(model, spec, run.progress)
    start = None
    if spec.method == "gptq":
        batches = _calibration_batches(calibration, batch_size)
        start = prepare_start(model, torch.cat(batches), batch_size, run, targets=False)
    BlockPass(model, [Quantize(spec)], run, label=f"{spec.method} W{spec.bits}").walk(
        start, free_start=True)
    return model


class Quantize(Step):
    """Replace the block's linears by QuantLinears: RTN, or GPTQ from the block's inputs
    (spec.true_sequential honoured there); after the last block, the head when
    spec.quantize_head."""

    def __init__(self, spec: QuantSpec) -> None:
        self.spec = spec

    def before(self, state: BlockState) -> None:
        calibrate = (lambda: state.run()) if self.spec.method == "gptq" else None
        state.quantized = quantize_block(state.block, self.spec, calibrate)

    def resume(self, state: BlockState) -> None:
        replace_with_shells(state.block, self.spec)

    def finish(self, model: nn.Module) -> None:
        if self.spec.quantize_head:
            quantize_head(model, self.spec)


class RoundScales(Step):
    """Round the block's quantized scales to the dtype the saved format stores them in
    (float16 for GPTQ and GGUF), so what is tuned afterwards is what will be served."""

    def __init__(self, dtype: str | torch.dtype) -> None:
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    def before(self, state: BlockState) -> None:
        round_block_scales(state.quantized, self.dtype, state.index)


def round_block_scales(quantized: dict, dtype: torch.dtype | None, index: int) -> None:
    """Round the scales of a block's QuantLinears to `dtype` (None: leave them)."""
    if dtype is not None:
        for name, q in quantized.items():
            round_module_scales(q, dtype, f"block {index}: {name}")
