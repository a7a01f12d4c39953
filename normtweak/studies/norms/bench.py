"""Norm benchmark: forward, backward and forward+backward of our norms vs eager torch and
torch.compile, with effective bandwidth and, on CUDA, the measured device copy bandwidth.

Bytes counted once each, in the input dtype: forward x + y + weight (+ bias); backward
x + dy + dx + weight (+ bias); forward+backward x + y + dy + dx + weight (+ bias), so a
fused forward+backward that reads x twice does not get credit for it. GB/s = bytes /
time; "%_of_copy" compares it with a measured copy of a 256 MiB buffer (64 MiB on the
CPU) on the same device (read + write). On the CPU "ours" is the PyTorch path (the Triton kernels need a
GPU, or TRITON_INTERPRET=1, which is far too slow to time).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from normtweak.studies.norms.ops import layer_norm, rms_norm, uses_triton


def timeit(fn: Callable[[], object], device: torch.device, min_time: float = 0.2, warmup: int = 3) -> float:
    """Median seconds per call."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def copy_bandwidth(nbytes: int, device: torch.device) -> float:
    """GB/s of a device-to-device copy (read + write counted)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / timeit(lambda: dst.copy_(src), device) / 1e9


def _impls(kind: str, n: int):
    eps = 1e-6 if kind == "rms" else 1e-5
    if kind == "rms":
        def ours(x, w, b):
            return rms_norm(x, w, eps)

        def eager(x, w, b):
            return F.rms_norm(x, (n,), w, eps)
    else:
        def ours(x, w, b):
            return layer_norm(x, w, b, eps)

        def eager(x, w, b):
            return F.layer_norm(x, (n,), w, b, eps)
    return {"ours": ours, "eager": eager, "compile": torch.compile(eager, dynamic=False)}


def bench_case(kind: str, rows: int, n: int, dtype: torch.dtype, device: torch.device,
               impls: tuple[str, ...]) -> list[dict]:
    x = torch.randn(rows, n, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(n, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(n, device=device, dtype=dtype, requires_grad=True) if kind == "layer" else None
    dy = torch.randn_like(x)
    params = [t for t in (x, w, b) if t is not None]
    size, esz = rows * n, x.element_size()
    pbytes = (len(params) - 1) * n * esz
    bytes_fwd, bytes_bwd, bytes_both = (k * size * esz + pbytes for k in (2, 3, 4))
    out = []
    fns = _impls(kind, n)
    for name in impls:
        fn = fns[name]

        def fwd(fn=fn):
            with torch.no_grad():
                return fn(x, w, b)

        y = fn(x, w, b)

        def bwd(y=y):
            return torch.autograd.grad(y, params, dy, retain_graph=True)

        def both(fn=fn):
            return torch.autograd.grad(fn(x, w, b), params, dy)

        for mode, f, nbytes in (("fwd", fwd, bytes_fwd), ("bwd", bwd, bytes_bwd),
                                ("fwd+bwd", both, bytes_both)):
            t = timeit(f, device)
            out.append({"norm": kind, "rows": rows, "hidden": n, "dtype": str(dtype).split(".")[-1],
                        "impl": name, "mode": mode, "ms": t * 1e3, "GB/s": nbytes / t / 1e9})
    return out


def run(hiddens=(1024, 4096, 16384), rows=(4096, 32768), dtypes=("float32", "bfloat16"),
        kinds=("rms", "layer"), device: str | None = None, impls=("ours", "eager", "compile")) -> dict:
    """All cases; returns {"device", "triton", "copy_GBps", "rows": [...]} with ratios filled in."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = []
    for kind in kinds:
        for r in rows:
            for n in hiddens:
                for dt in dtypes:
                    results += bench_case(kind, r, n, getattr(torch, dt), dev, tuple(impls))
    key = lambda row: (row["norm"], row["rows"], row["hidden"], row["dtype"], row["mode"])
    by_impl = {(key(row), row["impl"]): row["ms"] for row in results}
    copy = copy_bandwidth((256 if dev.type == "cuda" else 64) * 2**20, dev)
    for row in results:
        for other in impls:
            if other != row["impl"] and (key(row), other) in by_impl:
                row[f"x_vs_{other}"] = by_impl[(key(row), other)] / row["ms"]
        row["%_of_copy"] = 100 * row["GB/s"] / copy
    return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "triton": uses_triton(torch.empty(1, device=dev)), "threads": torch.get_num_threads(),
            "copy_GBps": copy, "rows": results}
