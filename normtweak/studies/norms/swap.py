"""Swap a model's LayerNorms for RMSNorm (and back).

RMSNorm(x) equals LayerNorm(x) exactly when x has zero mean over the hidden dimension
and the LayerNorm bias is zero. The weight is kept. The bias has no place in an
RMSNorm, so:
* folded: where the norm feeds only linear layers (pre-LN blocks of GPT-2, OPT, BLOOM),
  W(n(x) + b) + c = W n(x) + (W b + c), so b moves into those linears' biases exactly;
* dropped: elsewhere (post-LN encoders such as BERT, whose norm output is also the
  residual stream; a final norm before a bias-free head) the bias is dropped and the
  module is listed in the report, because the model's outputs change there.
Back (to="layer"): LayerNorm with weight (offset + w) and a zero bias; the offset of a
transformers RMSNorm (Gemma's 1 + w) is found by checking the module's output, and a
norm no formula reproduces is left alone and listed as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from normtweak.studies.norms.modules import LayerNorm, RMSNorm, _ours, _set

# Norm -> the linears (relative to the norm's parent) that consume its output and
# nothing else, per model type, for pre-LN blocks.
FOLD_CONSUMERS: dict[str, dict[str, tuple[str, ...]]] = {
    "gpt2": {"ln_1": ("attn.c_attn",), "ln_2": ("mlp.c_fc",)},
    "opt": {"self_attn_layer_norm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            "final_layer_norm": ("fc1",)},
    "bloom": {"input_layernorm": ("self_attention.query_key_value",),
              "post_attention_layernorm": ("mlp.dense_h_to_4h",)},
}


@dataclass
class SwapReport:
    to: str
    swapped: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)  # bias moved into the consuming linears
    dropped_bias: list[str] = field(default_factory=list)  # nonzero bias dropped: outputs change
    skipped: list[str] = field(default_factory=list)  # an RMSNorm whose formula we could not verify

    def __str__(self) -> str:
        text = (f"swapped {len(self.swapped)} norms to {self.to}; bias folded in {len(self.folded)}, "
                f"dropped in {len(self.dropped_bias)}")
        text += f": {', '.join(self.dropped_bias)}" if self.dropped_bias else ""
        return text + (f"; skipped (unknown formula): {', '.join(self.skipped)}" if self.skipped else "")


def _consumers(model: nn.Module, name: str) -> list[nn.Module] | None:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type == "opt" and not getattr(config, "do_layer_norm_before", True):
        return None
    if model_type == "bloom" and getattr(config, "apply_residual_connection_post_layernorm", False):
        return None
    parent, _, leaf = name.rpartition(".")
    paths = FOLD_CONSUMERS.get(model_type, {}).get(leaf)
    if not paths:
        return None
    root = model.get_submodule(parent) if parent else model
    return [root.get_submodule(p) for p in paths]


def fold_bias(bias: torch.Tensor, consumer: nn.Module) -> None:
    """consumer(n + bias) == consumer(n) afterwards: add W @ bias to its bias (Linear or GPT-2 Conv1D)."""
    with torch.no_grad():
        weight = consumer.weight.double()
        if isinstance(consumer, nn.Linear):
            extra = weight @ bias.double()  # [out, in] @ [in]
        else:  # transformers Conv1D: y = x @ W + b, W [in, out]
            extra = bias.double() @ weight
        if consumer.bias is None:
            consumer.bias = nn.Parameter(torch.zeros_like(extra, dtype=consumer.weight.dtype))
        consumer.bias.add_(extra.to(consumer.bias.dtype))


def _rms_offset(norm: nn.Module) -> float | None:
    """The weight offset of an RMSNorm: ours says it; a transformers one (Gemma: 1) is probed."""
    if isinstance(norm, RMSNorm):
        return norm.offset
    ours = _ours(norm, None)
    return ours.offset if isinstance(ours, RMSNorm) else None


def swap_norms(model: nn.Module, to: str = "rms") -> SwapReport:
    """Replace every LayerNorm by RMSNorm (to="rms") or every RMSNorm by LayerNorm (to="layer")."""
    from normtweak.arch import is_norm

    if to not in ("rms", "layer"):
        raise ValueError(f"swap_norms: to must be 'rms' or 'layer', got {to!r}")
    report = SwapReport(to)
    for name, norm in list(model.named_modules()):
        if not name or not is_norm(norm):
            continue
        is_layer = isinstance(norm, nn.LayerNorm) or getattr(norm, "kind", None) == "layer"
        if is_layer == (to == "layer"):
            continue
        weight = getattr(norm, "weight", None)
        eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
        hidden = weight.shape[0] if weight is not None else int(norm.normalized_shape[-1])
        kw = {"device": weight.device, "dtype": weight.dtype} if weight is not None else {}
        if to == "rms":
            new = RMSNorm(hidden, eps, elementwise_affine=weight is not None, **kw)
            bias = getattr(norm, "bias", None)
            if bias is not None and bool(bias.detach().ne(0).any()):
                consumers = _consumers(model, name)
                if consumers:
                    for c in consumers:
                        fold_bias(bias.detach(), c)
                    report.folded.append(name)
                else:
                    report.dropped_bias.append(name)
        else:
            offset = _rms_offset(norm)
            if offset is None:
                report.skipped.append(name)
                continue
            new = LayerNorm(hidden, eps, elementwise_affine=weight is not None, **kw)
            if weight is not None and offset:
                with torch.no_grad():
                    weight = weight + offset
        if weight is not None:
            with torch.no_grad():
                new.weight.copy_(weight)
        _set(model, name, new)
        report.swapped.append(name)
    return report
