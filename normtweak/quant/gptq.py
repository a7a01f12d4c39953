"""GPTQ (Frantar et al., 2022, arXiv 2210.17323): second-order weight quantization.

For a Linear with calibration inputs X [n, in], GPTQ quantizes the weight one input
column at a time and spreads each column's rounding error over the columns not yet
quantized, weighted by the inverse Hessian H^-1 of the layer's squared output error
(H = 2/n X^T X). Implementation follows the paper's Algorithm 1: dampening
(damp * mean diag(H) added to the diagonal), the upper Cholesky factor of H^-1,
lazy batch updates over blocks of `block_size` columns, optional act-order
(columns by decreasing diag(H), permutation kept as g_idx) and static groups.

Output is in RTN's format (normtweak.quant.rtn): codes [out, in] in the original
column order, scale/zero [out, G] and g_idx [in] (column -> group).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from normtweak.config import QuantSpec
from normtweak.quant.rtn import compute_qparams, max_code


@dataclass
class GPTQResult:
    """codes int32 [out, in]; scale, zero float32 [out, G]; g_idx int32 [in]; perm or None."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    g_idx: torch.Tensor
    perm: torch.Tensor | None


class GPTQ:
    """Accumulates one Linear's Hessian from its inputs, then quantizes its weight.

    gptq = GPTQ(layer); gptq.add_batch(x) for each calibration input [..., in];
    result = gptq.quantize(spec).
    """

    def __init__(self, layer: nn.Linear) -> None:
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"GPTQ needs an nn.Linear, got {type(layer).__name__}")
        self.layer = layer
        n = layer.in_features
        self.hessian = torch.zeros(n, n, dtype=torch.float32, device=layer.weight.device)
        self.nsamples = 0

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor) -> None:
        """Fold inputs [..., in] into the running H = 2/n sum x x^T (n = rows seen)."""
        x = inp.reshape(-1, inp.shape[-1]).to(self.hessian.device, torch.float32)
        m = x.shape[0]
        if m == 0:
            return
        total = self.nsamples + m
        self.hessian.mul_(self.nsamples / total)
        x = x * (2.0 / total) ** 0.5
        self.hessian.addmm_(x.t(), x)
        self.nsamples = total

    def quantize(self, spec: QuantSpec) -> GPTQResult:
        if self.nsamples == 0:
            raise ValueError("GPTQ.quantize called before any add_batch: no calibration inputs")
        return gptq_quantize(self.layer.weight, self.hessian, spec)


def _dead_columns(weight: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """Inputs that are always zero: their weight can't matter; set H_ii = 1, W[:, i] = 0."""
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    weight[:, dead] = 0.0
    return dead


def _inverse_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1."""
    h = hessian.clone()
    idx = torch.arange(h.shape[0], device=h.device)
    h[idx, idx] += damp * torch.mean(torch.diag(h))
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        raise ValueError(
            "GPTQ: the dampened Hessian is not positive definite; raise QuantSpec.damp "
            f"(now {damp}) or use more calibration samples"
        )
    hinv = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(hinv, upper=True)


@contextmanager
def _single_thread_on_cpu(device: torch.device):
    """The column loop is thousands of tiny ops: on CPU, intra-op threads only add
    synchronisation (tens of times slower on a busy machine), so run it on one."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _group_values(w, w1, err1, hinv, i1, i2, i, spec: QuantSpec):
    """The weights a dynamic group's parameters are computed from, [out, gs].

    spec: the layer's own (`for_layer`), whose group_size is gs and group_params the mode.
    "updated": every earlier column's error update applied; columns past the lazy block
    still owe the block's pending update, so it is applied to them here. "reference":
    what IST-DASLab's gptq.py reads, W[:, col:col+gs] as of the last finished lazy block
    (no update from the current block's quantized columns).
    """
    col, gs = i1 + i, spec.group_size
    if spec.group_params == "reference":
        return w[:, col:col + gs]
    k = max(0, gs - (i2 - col))
    tail = w[:, i2:i2 + k] - err1[:, :i] @ hinv[i1:col, i2:i2 + k]
    return torch.cat([w1[:, i:i + gs], tail], 1)


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec) -> GPTQResult:
    """Quantize weight [out, in] given the Hessian [in, in] of its layer's inputs."""
    with _single_thread_on_cpu(weight.device):
        return _gptq(weight, hessian, spec)


def _gptq(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec) -> GPTQResult:
    w = weight.detach().clone().float()
    h = hessian.detach().clone().float().to(w.device)
    out_f, n = w.shape
    spec = spec.for_layer("gptq", n)
    bits, gs, sym = spec.bits, spec.group_size, spec.symmetric
    maxq = max_code(bits)
    _dead_columns(w, h)

    perm = None
    if spec.act_order:
        perm = torch.argsort(torch.diag(h), descending=True)
    # Per-channel / per-tensor / static groups: parameters fixed from the whole weight.
    fixed = None
    if gs <= 0 or spec.static_groups:
        fixed = compute_qparams(w, bits, gs, sym, spec.full_range)
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    hinv = _inverse_cholesky(h, spec.damp)

    groups = spec.groups(n)
    scale = torch.ones(out_f, groups, device=w.device)
    zero = torch.zeros(out_f, groups, device=w.device)
    codes = torch.zeros(out_f, n, dtype=torch.int32, device=w.device)
    if fixed is not None:
        scale, zero = fixed[0].clone(), fixed[1].clone()
    orig_col = perm if perm is not None else torch.arange(n, device=w.device)
    orig_col_list = orig_col.tolist()
    s = z = None

    for i1 in range(0, n, spec.block_size):
        i2 = min(i1 + spec.block_size, n)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if gs <= 0:
                s, z = scale[:, 0], zero[:, 0]
            elif spec.static_groups:
                g = orig_col_list[col] // gs
                s, z = scale[:, g], zero[:, g]
            elif col % gs == 0:
                cur = _group_values(w, w1, err1, hinv, i1, i2, i, spec)
                sg, zg = compute_qparams(cur, bits, -1, sym, spec.full_range)
                s, z = sg[:, 0], zg[:, 0]
                scale[:, col // gs], zero[:, col // gs] = s, z
            col_w = w1[:, i]
            q = (torch.round(col_w / s) + z).clamp(0, maxq)
            codes[:, col] = q.to(torch.int32)
            err = (col_w - s * (q - z)) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    if gs > 0 and not spec.static_groups:
        g_pos = torch.arange(n, dtype=torch.int32, device=w.device) // gs
    elif gs > 0:
        g_pos = (orig_col // gs).to(torch.int32)
    else:
        g_pos = torch.zeros(n, dtype=torch.int32, device=w.device)
    g_idx = torch.empty_like(g_pos)
    g_idx[orig_col] = g_pos
    out_codes = torch.empty_like(codes)
    out_codes[:, orig_col] = codes
    return GPTQResult(out_codes, scale, zero, g_idx, perm)
