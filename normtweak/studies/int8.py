"""INT8 paths: the seed project's toy INT8 norm, and W8A8 linears.

- `Int8Norm` wraps any norm module (RMSNorm / LayerNorm, transformers' or ours):
  its output, and optionally its weight, are fake-quantized to signed 8 bits with
  one dynamic per-tensor scale (max|x| / 127). Gradients pass straight through
  (STE), so the wrapped norm can still be tweaked.
- `W8A8Linear`: int8 weights with one scale per output channel, activations
  quantized per token (dynamic, max|x| / 127 over the features) at run time. The
  integer matmul is emulated in float (fake quant) - exact enough on CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from normtweak import arch


def symmetric_scale(x: torch.Tensor, bits: int = 8, dim: int | None = None) -> torch.Tensor:
    """max|x| / (2**(bits-1) - 1), over all of x (dim None) or along `dim` (kept)."""
    qmax = (1 << (bits - 1)) - 1
    amax = x.detach().abs().amax() if dim is None else x.detach().abs().amax(dim, keepdim=True)
    amax = amax.float()
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def quantize_symmetric(x: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Signed integer codes round(x / scale) clamped to [-(2**(b-1)-1), 2**(b-1)-1], as int8/16."""
    qmax = (1 << (bits - 1)) - 1
    q = torch.round(x.float() / scale).clamp(-qmax, qmax)
    return q.to(torch.int8 if bits <= 8 else torch.int16)


def fake_quant(x: torch.Tensor, bits: int = 8, dim: int | None = None) -> torch.Tensor:
    """Quantize-dequantize with a symmetric dynamic scale; straight-through gradient."""
    scale = symmetric_scale(x, bits, dim)
    xq = (quantize_symmetric(x, scale, bits).float() * scale).to(x.dtype)
    return x + (xq - x).detach()


class Int8Norm(nn.Module):
    """A norm whose output (and optionally weight) is fake-quantized to `bits` bits."""

    def __init__(self, norm: nn.Module, bits: int = 8, quantize_weight: bool = False) -> None:
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {bits}")
        if quantize_weight and getattr(norm, "weight", None) is None:
            raise ValueError(f"{type(norm).__name__} has no weight to quantize")
        self.norm, self.bits, self.quantize_weight = norm, bits, quantize_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_weight:
            w = fake_quant(self.norm.weight, self.bits)
            y = functional_call(self.norm, {"weight": w}, (x,), strict=False)
        else:
            y = self.norm(x)
        return fake_quant(y, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, quantize_weight={self.quantize_weight}"


def wrap_norms_int8(model: nn.Module, bits: int = 8, quantize_weight: bool = False) -> nn.Module:
    """Wrap every norm module of `model` (blocks, embeddings, final norm) in Int8Norm."""

    names = [n for n, m in model.named_modules() if n and arch.is_norm(m)]
    for name in names:
        module = model.get_submodule(name)
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        if isinstance(parent, Int8Norm):
            continue
        model.set_submodule(name, Int8Norm(module, bits, quantize_weight))
    return model


class W8A8Linear(nn.Module):
    """Linear with int8 per-output-channel weights and per-token dynamic int8 activations.

    Buffers: weight_int8 int8 [out, in], weight_scale float32 [out, 1], bias [out] or None.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 act_bits: int = 8) -> None:
        super().__init__()
        self.in_features, self.out_features, self.act_bits = in_features, out_features, act_bits
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features,
                                                        dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, 1))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features))
        else:
            self.bias = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, act_bits: int = 8) -> W8A8Linear:
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, act_bits)
        q.to(linear.weight.device)
        with torch.no_grad():
            w = linear.weight.detach()
            q.weight_scale.copy_(symmetric_scale(w, 8, dim=1))
            q.weight_int8.copy_(quantize_symmetric(w, q.weight_scale, 8))
            if linear.bias is not None:
                q.bias.copy_(linear.bias.detach().float())
        return q

    def dequantize(self) -> torch.Tensor:
        """The int8 weight times its scales, float32 [out, in]."""
        return self.weight_int8.float() * self.weight_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = symmetric_scale(x, self.act_bits, dim=-1)  # one scale per token
        xq = quantize_symmetric(x, xs, self.act_bits).float()
        acc = xq @ self.weight_int8.float().t()  # integer accumulation, emulated in float
        y = acc * xs * self.weight_scale.t()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


def quantize_model_w8a8(model: nn.Module, quantize_head: bool = False,
                        act_bits: int = 8) -> nn.Module:
    """Replace every block nn.Linear (and the head if asked) by a W8A8Linear, in place."""

    adapter = arch.get_adapter(model)
    for block in adapter.get_blocks(model):
        for name, lin in arch.block_linears(block):
            block.set_submodule(name, W8A8Linear.from_linear(lin, act_bits))
    head = adapter.get_head(model)
    if quantize_head and isinstance(head, nn.Linear):
        name = next(n for n, m in model.named_modules() if m is head)
        model.set_submodule(name, W8A8Linear.from_linear(head, act_bits))
    return model
