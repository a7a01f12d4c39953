"""Compiled Triton kernels on a CUDA device (skipped without one)."""

import pytest
import torch
import torch.nn.functional as F

from normtweak.norms import layer_norm, rms_norm

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [4096, 5000, 65536])
def test_cuda_kernels_match_float64(dtype, n):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(64, n, device="cuda", generator=g).to(dtype).requires_grad_()
    w = torch.randn(n, device="cuda", generator=g).to(dtype).requires_grad_()
    dy = torch.randn(64, n, device="cuda", generator=g).to(dtype)
    for ours, ref in ((lambda a, b: rms_norm(a, b), lambda a, b: F.rms_norm(a, (n,), b, 1e-6)),
                      (lambda a, b: layer_norm(a, b), lambda a, b: F.layer_norm(a, (n,), b, None, 1e-5))):
        o = (ours(x, w),) + torch.autograd.grad(ours(x, w), (x, w), dy)
        t = (ref(x, w),) + torch.autograd.grad(ref(x, w), (x, w), dy)
        x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
        r = (ref(x64, w64),) + torch.autograd.grad(ref(x64, w64), (x64, w64), dy.double())
        for a, b, c in zip(o, t, r):
            assert (a.double() - c).abs().max() <= 2 * (b.double() - c).abs().max() + 1e-5 * c.abs().max()
