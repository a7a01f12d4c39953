"""Compiled Triton kernels on a CUDA device (skipped without one)."""

import pytest
import torch
import torch.nn.functional as F

from normtweak.studies.norms import layer_norm, rms_norm

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


def test_cuda_layer_norm_bias_offset_and_determinism():
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(4, 8, 3000, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
    w = torch.randn(3000, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
    b = torch.randn(3000, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
    dy = torch.randn_like(x)
    first = torch.autograd.grad(layer_norm(x, w, b), (x, w, b), dy)
    again = torch.autograd.grad(layer_norm(x, w, b), (x, w, b), dy)
    assert all(torch.equal(a, c) for a, c in zip(first, again))  # no atomics: bitwise repeatable
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = torch.autograd.grad(F.layer_norm(x64, (3000,), w64, b64, 1e-5), (x64, w64, b64), dy.double())
    same = torch.autograd.grad(F.layer_norm(x, (3000,), w, b, 1e-5), (x, w, b), dy)
    for a, t, r in zip(first, same, ref):
        assert (a.double() - r).abs().max() <= 2 * (t.double() - r).abs().max() + 1e-2 * r.abs().max()
    y = rms_norm(x, w, 1e-6, offset=1.0)
    want = F.rms_norm(x.double(), (3000,), w.double() + 1.0, 1e-6)
    assert (y.double() - want).abs().max() <= 2e-2 * want.abs().max()


def test_cuda_torch_compile_calls_our_op():
    from normtweak.studies.norms import RMSNorm

    norm = RMSNorm(4096).cuda()
    x = torch.randn(64, 4096, device="cuda", requires_grad=True)
    y = torch.compile(norm, fullgraph=True)(x)
    y.sum().backward()
    torch.testing.assert_close(y, norm(x))
    assert norm.weight.grad is not None
