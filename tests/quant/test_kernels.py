"""The fused Triton dequant-matmul equals QuantLinear's PyTorch path.

Without a GPU this runs under TRITON_INTERPRET=1 (set by tests/conftest.py) on CPU
tensors; on a GPU the same test runs the compiled kernel, plus the dispatch test.
"""

import os

import pytest
import torch
from torch import nn

from normtweak.config import QuantSpec
from normtweak.quant import kernels
from normtweak.quant.gptq import GPTQ
from normtweak.quant.linear import QuantLinear
from normtweak.quant.rtn import rtn_quantize

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not kernels.supported(4) or (DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)


def make(bits, group_size, bias=True, act_order=False):
    torch.manual_seed(bits + group_size)
    lin = nn.Linear(80, 48, bias=bias)
    if act_order:
        g = GPTQ(lin)
        g.add_batch(torch.randn(200, 80) * torch.linspace(0.2, 2, 80))
        spec = QuantSpec(bits=bits, group_size=group_size, method="gptq", act_order=True)
        r = g.quantize(spec)
        return QuantLinear.from_linear(lin, r.codes, r.scale, r.zero, spec, g_idx=r.g_idx)
    spec = QuantSpec(bits=bits, group_size=group_size)
    codes, scale, zero = rtn_quantize(lin.weight, spec)
    return QuantLinear.from_linear(lin, codes, scale, zero, spec)


@pytest.mark.parametrize("bits, group_size, bias, act_order", [
    (4, 16, True, False), (2, -1, False, False), (8, 0, True, False), (4, 16, True, True),
])
def test_kernel_equals_pytorch_path(bits, group_size, bias, act_order):
    q = make(bits, group_size, bias, act_order).to(DEVICE)
    x = torch.randn(3, 5, 80, device=DEVICE)  # M=15 and K=80 are not multiples of the tiles
    ref = torch.nn.functional.linear(x.double(), q.dequantize().double(),
                                     None if q.bias is None else q.bias.double())
    y = kernels.dequant_matmul(x, q.qweight, q.scales, q.zeros, q.g_idx, q.bias, bits)
    assert y.shape == (3, 5, 48)
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)


def test_unsupported_width_rejected():
    q = make(3, 16)
    with pytest.raises(ValueError, match="bits"):
        kernels.dequant_matmul(torch.randn(2, 80), q.qweight, q.scales, q.zeros, q.g_idx,
                               q.bias, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_forward_dispatch_on_gpu():
    q = make(4, 16).cuda()
    q.use_kernel = True
    x = torch.randn(4, 80, device="cuda")
    with torch.no_grad():
        fused = q(x)
    x.requires_grad_(True)
    eager = q(x)  # autograd through x: the PyTorch path
    torch.testing.assert_close(fused, eager.detach(), rtol=1e-4, atol=1e-4)
