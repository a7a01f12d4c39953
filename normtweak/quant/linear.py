"""QuantLinear: a Linear layer whose weight is stored as packed integer codes.

Buffers (all in the state dict, so a model round-trips through safetensors):
  qweight int32 [out, ceil(in*bits/32)]  packed codes (see normtweak.quant.pack)
  scales  [out, G]  float16/bfloat16/float32
  zeros   [out, G]  same dtype as scales (integer values: the zero-point codes)
  g_idx   int32 [in]  group of each input column (j // group_size unless GPTQ
          act-order permuted the groups; all zeros for per-channel / per-tensor)
  bias    [out] or absent
Forward dequantizes to the input's dtype and calls F.linear (PyTorch path; on CUDA
a fused Triton dequant-matmul when no gradient must flow). The dequantized weight is
cached and rebuilt whenever a buffer changes (device, dtype, in-place edit or
load_state_dict), so repeated forwards cost one matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normtweak.config import QuantSpec
from normtweak.quant.pack import pack, packed_words, unpack
from normtweak.quant.rtn import dequantize as dequantize_codes

SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def default_g_idx(in_features: int, group_size: int, device=None) -> torch.Tensor:
    """Column -> group index without act-order: j // group_size (zeros if not grouped)."""
    j = torch.arange(in_features, dtype=torch.int32, device=device)
    return j // group_size if group_size > 0 else torch.zeros_like(j)


class QuantLinear(nn.Module):
    """y = x @ dequantize(qweight, scales, zeros, g_idx)^T + bias.

    QuantLinear(in_features, out_features, spec, bias=True) builds an empty layer
    (zero buffers of the right shapes) to be filled by `load_state_dict`.
    Two per-layer switches (attributes; `set_quant_linear_options(model, ...)` sets them on
    every layer of a model):
    cache: keep the dequantized weight between forwards (fast when the same layer runs many
    times, as in tweaking; costs a float copy of the weight). On for layers normtweak makes,
    off for layers `load_quantized` reads, so a loaded model holds its packed weights only.
    use_kernel: on CUDA, without autograd through x, 2/4/8-bit layers run the fused Triton
    dequant-matmul (normtweak.quant.kernels) instead of dequantize + F.linear. Off: the
    kernel is tested for correctness but was never timed against dequantize + cuBLAS.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        spec: QuantSpec,
        bias: bool = True,
        scale_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES}, got {scale_dtype}")
        spec = spec.for_layer("QuantLinear", in_features)  # this layer's own group size
        self.in_features, self.out_features = in_features, out_features
        self.spec = spec
        self.bits, self.group_size = spec.bits, spec.group_size
        groups = spec.groups(in_features)
        words = packed_words(in_features, spec.bits)
        self.register_buffer("qweight", torch.zeros(out_features, words, dtype=torch.int32,
                                                    device=device))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=scale_dtype,
                                                  device=device))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=scale_dtype,
                                                  device=device))
        self.register_buffer("g_idx", default_g_idx(in_features, spec.group_size, device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=scale_dtype,
                                                     device=device))
        else:
            self.bias = None
        self._cache: tuple | None = None
        self.cache = True
        self.use_kernel = False

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        codes: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor,
        spec: QuantSpec,
        g_idx: torch.Tensor | None = None,
        scale_dtype: torch.dtype | None = None,
    ) -> QuantLinear:
        """Build from a float Linear (for its bias) and its codes [out, in], scale/zero [out, G]."""
        out_f, in_f = linear.weight.shape
        spec = spec.for_layer("QuantLinear", in_f)
        if codes.shape != (out_f, in_f):
            raise ValueError(f"codes shape {tuple(codes.shape)} != weight shape {(out_f, in_f)}")
        groups = spec.groups(in_f)
        for name, t in (("scale", scale), ("zero", zero)):
            if t.shape != (out_f, groups):
                raise ValueError(f"{name} shape {tuple(t.shape)} != expected {(out_f, groups)}")
        dtype = scale_dtype or linear.weight.dtype
        if dtype not in SCALE_DTYPES:
            dtype = torch.float32
        device = linear.weight.device
        q = cls(in_f, out_f, spec, bias=linear.bias is not None, scale_dtype=dtype, device=device)
        with torch.no_grad():
            q.qweight.copy_(pack(codes.to(device), spec.bits))
            q.scales.copy_(scale)
            q.zeros.copy_(zero)
            if g_idx is not None:
                q.g_idx.copy_(g_idx.to(torch.int32))
            if linear.bias is not None:
                q.bias.copy_(linear.bias.detach())
        return q

    def codes(self) -> torch.Tensor:
        """Unpacked integer codes, int32 [out, in]."""
        return unpack(self.qweight, self.bits, self.in_features)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight the layer computes with, [out, in], in `dtype` (default scales')."""
        return dequantize_codes(self.codes(), self.scales, self.zeros, self.group_size,
                                g_idx=self.g_idx, dtype=dtype or self.scales.dtype)

    def _cache_key(self, dtype: torch.dtype) -> tuple:
        bufs = [self.qweight, self.scales, self.zeros, self.g_idx]
        return (dtype,) + tuple((b.data_ptr(), b._version, b.device) for b in bufs)

    def weight_for(self, dtype: torch.dtype) -> torch.Tensor:
        """Dequantized weight in `dtype`; with `cache`, kept until a buffer changes."""
        if not self.cache:
            self._cache = None
            with torch.no_grad():
                return self.dequantize(torch.float32).to(dtype)
        key = self._cache_key(dtype)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.dequantize(torch.float32).to(dtype))
        return self._cache[1]

    def _apply(self, fn, *args, **kwargs):
        self._cache = None  # never keep a dequantized copy on the old device
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_kernel and x.is_cuda and not (torch.is_grad_enabled() and x.requires_grad):
            from normtweak.quant import kernels

            if kernels.supported(self.bits):
                return kernels.dequant_matmul(x, self.qweight, self.scales, self.zeros,
                                              self.g_idx, self.bias, self.bits)
        w = self.weight_for(x.dtype)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, w, bias)

    def to_linear(self) -> nn.Linear:
        """An equivalent float nn.Linear (weight = dequantized codes, in scales' dtype)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.qweight.device, dtype=self.scales.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.dequantize(torch.float32))
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, group_size={self.group_size}, "
                f"bias={self.bias is not None}, scale_dtype={self.scales.dtype}")


def set_quant_linear_options(model: nn.Module, cache: bool | None = None,
                             use_kernel: bool | None = None) -> int:
    """Set the per-layer switches of every QuantLinear in `model` (None: leave it); returns
    how many layers there are."""
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    for m in layers:
        if cache is not None:
            m.cache = cache
            if not cache:
                m._cache = None
        if use_kernel is not None:
            m.use_kernel = use_kernel
    return len(layers)
