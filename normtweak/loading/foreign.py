"""Put a quantized checkpoint's linears into a float model: tweak a model someone else quantized."""

from __future__ import annotations

import os

from torch import nn


def attach_quantized(model: nn.Module, quantized_path: str | os.PathLike) -> list[str]:
    """Replace `model`'s nn.Linears by the QuantLinears of the checkpoint at `quantized_path`.

    Any format load_quantized reads (normtweak, compressed-tensors, GPTQ, GGUF). The float
    model keeps its norms, embeddings and head (the targets of norm tweaking); only the
    linears the checkpoint quantized are swapped, after checking each one's shape. The
    QuantLinears move to the device and their scales keep the checkpoint's dtype.
    Returns the replaced module names.
    """
    from normtweak.io.load import load_quantized
    from normtweak.quant.linear import QuantLinear

    quantized, _ = load_quantized(quantized_path)
    found = {n: m for n, m in quantized.named_modules() if isinstance(m, QuantLinear)}
    if not found:
        raise ValueError(f"{quantized_path} holds no quantized linears")
    for name, q in found.items():
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{quantized_path} quantizes {name!r}, which the float model does "
                             f"not have: is it the same architecture?") from None
        if isinstance(target, QuantLinear):
            raise ValueError(f"{name} is already quantized in the float model")
        if not isinstance(target, nn.Linear) or (target.in_features, target.out_features) != (
                q.in_features, q.out_features):
            raise ValueError(f"{name}: the checkpoint's layer is {q.out_features}x{q.in_features}, "
                             f"the float model has {target}")
    device = next(model.parameters()).device
    for name, q in found.items():
        model.set_submodule(name, q.to(device))
    return list(found)


def load_quantized_linears(quantized_path: str | os.PathLike) -> dict:
    """name (from the model's root) -> QuantLinear, of any checkpoint load_quantized reads."""
    from normtweak.io.load import load_quantized
    from normtweak.quant.linear import QuantLinear

    quantized, _ = load_quantized(quantized_path)
    found = {n: m for n, m in quantized.named_modules() if isinstance(m, QuantLinear)}
    if not found:
        raise ValueError(f"{quantized_path} holds no quantized linears")
    return found


def attach_to_block(model: nn.Module, block: nn.Module, linears: dict) -> list[str]:
    """Swap the nn.Linears of one block of `model` for the imported QuantLinears, in place.

    For the tweak pipeline: call it where quantize_block would run, after the float block
    produced its targets. Every nn.Linear in the block must have an imported counterpart
    (same name, same shape); returns the names replaced (relative to the block).
    """
    from normtweak import arch

    prefix = next((n for n, m in model.named_modules() if m is block), None)
    if prefix is None:
        raise ValueError("the block is not part of the model")
    device = next(block.parameters()).device
    replaced = []
    for name, lin in arch.block_linears(block):
        q = linears.get(f"{prefix}.{name}")
        if q is None:
            raise ValueError(f"the quantized checkpoint has no {prefix}.{name}")
        if (q.in_features, q.out_features) != (lin.in_features, lin.out_features):
            raise ValueError(f"{prefix}.{name}: the checkpoint's layer is {q.out_features}x"
                             f"{q.in_features}, the float model's {lin.out_features}x"
                             f"{lin.in_features}")
        block.set_submodule(name, q.to(device))
        replaced.append(name)
    return replaced


def imported_spec(linears: dict):
    """The QuantSpec every imported QuantLinear shares (bits, group size, symmetry).

    Tweaking checkpoints and resumes one spec per run: mixed precision is refused here. Group
    sizes may differ only as QuantSpec.group_fallback makes them (a layer whose inputs the
    largest group size does not divide takes the largest of 128/64/32 that does, as normtweak's
    own W4A16 output of SmolLM2 holds): that is the spec with the largest group size.
    """
    from dataclasses import replace

    specs = {(q.spec.bits, q.spec.group_size, q.spec.symmetric) for q in linears.values()}
    if len(specs) == 1:
        return next(iter(linears.values())).spec
    widest = max(linears.values(), key=lambda q: q.spec.group_size).spec
    candidate = replace(widest, group_fallback=True)
    if {(b, s) for b, _, s in specs} == {(widest.bits, widest.symmetric)} and widest.group_size > 0:
        try:
            if all(candidate.layer_group_size(name, q.in_features) == q.spec.group_size
                   for name, q in linears.items()):
                return candidate
        except ValueError:
            pass
    raise ValueError(f"the quantized checkpoint mixes quantization settings {sorted(specs)}: "
                     "tweaking it needs one (bits, group_size, symmetric) for every linear "
                     "(group sizes may differ only where the largest does not divide a "
                     "layer's inputs)")
