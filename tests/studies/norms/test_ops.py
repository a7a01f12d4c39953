"""Norm ops against a float64 reference (Triton kernels run interpreted on the CPU here)."""

import pytest
import torch
import torch.nn.functional as F

from normtweak.studies.norms import layer_norm, reference, rms_norm, uses_triton

SHAPES = [(1, 1), (7, 1000), (3, 5, 123), (2, 3, 4, 257)]
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def ref_rms(x, w, eps, offset=0.0):
    x = x.double()
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y * (w.double() + offset) if w is not None else y


def ref_ln(x, w, b, eps):
    return F.layer_norm(x.double(), x.shape[-1:], None if w is None else w.double(),
                        None if b is None else b.double(), eps)


def grads(fn, inputs, dy):
    leaves = [t for t in inputs if t is not None]
    return torch.autograd.grad(fn(*inputs), leaves, dy)


def check(ours, torch_same_dtype, ref, dtype):
    """flash-attn style: |ours - ref| <= 2 * |torch - ref| + atol, elementwise maximum."""
    for o, t, r in zip(ours, torch_same_dtype, ref):
        err = (o.double() - r).abs().max().item()
        base = (t.double() - r).abs().max().item()
        assert err <= 2 * base + ATOL[dtype] * max(1.0, r.abs().max().item()), (err, base)


def make(shape, dtype, weight=True, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    x = (torch.randn(shape, generator=g) * 2 + 0.5).to(dtype).requires_grad_()
    w = (torch.randn(n, generator=g) * 0.5 + 1).to(dtype).requires_grad_() if weight else None
    b = (torch.randn(n, generator=g) * 0.1).to(dtype).requires_grad_() if bias else None
    dy = torch.randn(shape, generator=g).to(dtype)
    return x, w, b, dy


def _leaf64(t):
    return None if t is None else t.detach().double().requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weight", [True, False])
def test_rms_norm_matches_float64(shape, dtype, weight):
    assert uses_triton(torch.empty(1))  # conftest sets TRITON_INTERPRET=1: the kernels are tested
    x, w, _, dy = make(shape, dtype, weight=weight, bias=False)
    for offset in (0.0, 1.0):
        ours = (rms_norm(x, w, 1e-6, offset),) + grads(lambda a, b: rms_norm(a, b, 1e-6, offset), (x, w), dy)  # noqa: B023
        wt = None if w is None else (w + offset)
        same = (F.rms_norm(x, shape[-1:], wt, 1e-6),) + grads(
            lambda a, b: F.rms_norm(a, shape[-1:], None if b is None else b + offset, 1e-6), (x, w), dy)  # noqa: B023
        x64, w64 = _leaf64(x), _leaf64(w)
        ref = (ref_rms(x64, w64, 1e-6, offset),) + grads(lambda a, b: ref_rms(a, b, 1e-6, offset),  # noqa: B023
                                                         (x64, w64), dy.double())
        check(ours, same, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weight,bias", [(True, True), (True, False), (False, False)])
def test_layer_norm_matches_float64(shape, dtype, weight, bias):
    x, w, b, dy = make(shape, dtype, weight=weight, bias=bias)
    ours = (layer_norm(x, w, b, 1e-5),) + grads(lambda *a: layer_norm(*a, 1e-5), (x, w, b), dy)
    same = (F.layer_norm(x, shape[-1:], w, b, 1e-5),) + grads(
        lambda *a: F.layer_norm(a[0], shape[-1:], *a[1:], 1e-5), (x, w, b), dy)
    x64, w64, b64 = _leaf64(x), _leaf64(w), _leaf64(b)
    ref = (ref_ln(x64, w64, b64, 1e-5),) + grads(lambda *a: ref_ln(*a, 1e-5), (x64, w64, b64), dy.double())
    check(ours, same, ref, dtype)


def test_strided_rows_and_wide_rows():
    base = torch.randn(6, 2 * 300, dtype=torch.float32)
    x = base[:, :300]  # a view whose rows are 600 elements apart
    assert x.stride(0) == 600 and not x.is_contiguous()
    x = x.detach().requires_grad_()
    w = torch.randn(300, requires_grad=True)
    dy = torch.randn(6, 300)
    for ours_fn, ref_fn in ((lambda a, b: rms_norm(a, b), lambda a, b: ref_rms(a, b, 1e-6)),
                            (lambda a, b: layer_norm(a, b), lambda a, b: ref_ln(a, b, None, 1e-5))):
        o = (ours_fn(x, w),) + grads(ours_fn, (x, w), dy)
        x64, w64 = _leaf64(x), _leaf64(w)
        r = (ref_fn(x64, w64),) + grads(ref_fn, (x64, w64), dy.double())
        for a, c in zip(o, r):
            torch.testing.assert_close(a.double(), c, atol=2e-5, rtol=1e-5)
    # Rows wider than one block walk the columns in chunks (ONE_PASS=False).
    from normtweak.studies.norms.kernels import MAX_BLOCK

    wide = torch.randn(2, MAX_BLOCK + 77, requires_grad=True)
    ww = torch.randn(MAX_BLOCK + 77, requires_grad=True)
    wb = torch.randn(MAX_BLOCK + 77, requires_grad=True)
    dyw = torch.randn_like(wide)
    o = (rms_norm(wide, ww),) + grads(rms_norm, (wide, ww), dyw)
    r = (ref_rms(_leaf64(wide), _leaf64(ww), 1e-6),)
    r += grads(lambda a, b: ref_rms(a, b, 1e-6), (_leaf64(wide), _leaf64(ww)), dyw.double())
    for a, c in zip(o, r):
        torch.testing.assert_close(a.double(), c, atol=5e-5, rtol=1e-5)
    o = (layer_norm(wide, ww, wb),) + grads(layer_norm, (wide, ww, wb), dyw)
    leaves = (_leaf64(wide), _leaf64(ww), _leaf64(wb))
    r = (ref_ln(*leaves, 1e-5),) + grads(lambda *a: ref_ln(*a, 1e-5), leaves, dyw.double())
    for a, c in zip(o, r):
        torch.testing.assert_close(a.double(), c, atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("fn,ref", [(rms_norm, lambda a, w: ref_rms(a, w, 1e-6)),
                                    (layer_norm, lambda a, w: ref_ln(a, w, None, 1e-5))])
def test_strided_view_of_a_3d_tensor(fn, ref):
    """Leading dimensions that cannot be flattened as a view (x[:, ::2, :n]) still work."""
    base = torch.randn(3, 10, 200)
    x = base[:, ::2, :123].detach().requires_grad_()
    w = torch.randn(123, requires_grad=True)
    dy = torch.randn(3, 5, 123)
    o = (fn(x, w),) + grads(fn, (x, w), dy)
    x64, w64 = _leaf64(x), _leaf64(w)
    r = (ref(x64, w64),) + grads(ref, (x64, w64), dy.double())
    assert o[0].shape == x.shape and o[1].shape == x.shape
    for a, c in zip(o, r):
        torch.testing.assert_close(a.double(), c, atol=2e-5, rtol=1e-5)


def test_backward_is_deterministic():
    x, w, b, dy = make((37, 129), torch.float32)
    first = grads(lambda *a: layer_norm(*a), (x, w, b), dy)
    for _ in range(2):
        assert all(torch.equal(a, c) for a, c in zip(first, grads(lambda *a: layer_norm(*a), (x, w, b), dy)))


def test_pytorch_path_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(9, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, generator=g, requires_grad=True)

    def rms(x, w):
        y, _ = reference.rms_norm_forward(x, w, 1e-6, 1.0)
        return y

    class RmsFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            y, rstd = reference.rms_norm_forward(x, w, 1e-6, 1.0)
            ctx.save_for_backward(x, w, rstd)
            return y

        @staticmethod
        def backward(ctx, dy):
            x, w, rstd = ctx.saved_tensors
            return reference.rms_norm_backward(dy, x, w, rstd, 1.0)

    class LnFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):
            y, mean, rstd = reference.layer_norm_forward(x, w, b, 1e-5)
            ctx.save_for_backward(x, w, mean, rstd)
            return y

        @staticmethod
        def backward(ctx, dy):
            x, w, mean, rstd = ctx.saved_tensors
            return reference.layer_norm_backward(dy, x, w, mean, rstd, True)

    # The backward formulas against finite differences, directly and through the public
    # functions (float64 takes the PyTorch path inside the registered custom ops).
    assert torch.autograd.gradcheck(RmsFn.apply, (x, w))
    assert torch.autograd.gradcheck(LnFn.apply, (x, w, b))
    assert torch.autograd.gradcheck(rms, (x, w))
    assert not uses_triton(x)
    assert torch.autograd.gradcheck(lambda a, c: rms_norm(a, c, 1e-6, 1.0), (x, w))
    assert torch.autograd.gradcheck(lambda a: rms_norm(a, None, 1e-6), (x,))
    assert torch.autograd.gradcheck(lambda a, c, d: layer_norm(a, c, d, 1e-5), (x, w, b))
    assert torch.autograd.gradcheck(lambda a, c: layer_norm(a, c, None, 1e-5), (x, w))
    x3 = torch.randn(2, 3, 4, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: layer_norm(a.transpose(0, 1), None, None), (x3,))


@pytest.mark.parametrize("fn", [rms_norm, layer_norm])
def test_bad_input_is_a_value_error(fn):
    with pytest.raises(ValueError, match="shape"):
        fn(torch.randn(3, 8), torch.ones(7))
    with pytest.raises(ValueError, match="non-empty"):
        fn(torch.randn(0, 8), torch.ones(8))
    with pytest.raises(ValueError, match="float"):
        fn(torch.ones(3, 8, dtype=torch.int64), None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("weight,bias", [(True, True), (True, False), (False, False)])
def test_cpu_path_matches_float64(monkeypatch, dtype, weight, bias):
    """Without the interpreter, CPU tensors take the PyTorch path (fused LayerNorm)."""
    monkeypatch.setattr("normtweak.studies.norms.ops.INTERPRET", False)
    assert not uses_triton(torch.empty(1))
    x, w, b, dy = make((3, 5, 123), dtype, weight=weight, bias=bias)
    ours = (layer_norm(x, w, b, 1e-5),) + grads(lambda *a: layer_norm(*a, 1e-5), (x, w, b), dy)
    same = (F.layer_norm(x, (123,), w, b, 1e-5),) + grads(
        lambda *a: F.layer_norm(a[0], (123,), *a[1:], 1e-5), (x, w, b), dy)
    x64, w64, b64 = _leaf64(x), _leaf64(w), _leaf64(b)
    ref = (ref_ln(x64, w64, b64, 1e-5),) + grads(lambda *a: ref_ln(*a, 1e-5), (x64, w64, b64), dy.double())
    if dtype == torch.float64:
        for a, c in zip(ours, ref):
            torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)
    else:
        check(ours, same, ref, dtype)
    xr, wr, _, dyr = make((4, 37), dtype, bias=False)
    o = (rms_norm(xr, wr),) + grads(rms_norm, (xr, wr), dyr)
    r = (ref_rms(_leaf64(xr), _leaf64(wr), 1e-6),)
    r += grads(lambda a, c: ref_rms(a, c, 1e-6), (_leaf64(xr), _leaf64(wr)), dyr.double())
    t = (F.rms_norm(xr, (37,), wr, 1e-6),) + grads(lambda a, c: F.rms_norm(a, (37,), c, 1e-6), (xr, wr), dyr)
    if dtype == torch.float64:
        for a, c in zip(o, r):
            torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)
    else:
        check(o, t, r, dtype)
