"""Triton kernels for RMSNorm and LayerNorm, forward and backward.

One program normalises one row in the forward pass; in the backward pass each program
owns a contiguous range of rows and writes its own partial sums of dweight/dbias into
row `pid` of a [programs, N] float32 buffer, which the launcher then sums: no atomics,
so the result is deterministic. Rows wider than one block (up to 64K and beyond) are
walked in column chunks (ONE_PASS=False); rows that fit keep x in registers.

Statistics are float32 whatever the input dtype. Rows may be strided (row stride is an
argument); the last dimension must be contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_BLOCK = 8192


@triton.jit
def _rms_fwd(X, Y, W, RSTD, stride_x, stride_y, N, eps, offset,
             HAS_W: tl.constexpr, ONE_PASS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    X += row * stride_x
    Y += row * stride_y
    cols = tl.arange(0, BLOCK)
    if ONE_PASS:
        mask = cols < N
        x = tl.load(X + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
        y = x * rstd
        if HAS_W:
            y = y * (tl.load(W + cols, mask=mask, other=0.0).to(tl.float32) + offset)
        tl.store(Y + cols, y.to(Y.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            mask = start + cols < N
            x = tl.load(X + start + cols, mask=mask, other=0.0).to(tl.float32)
            acc += x * x
        rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / N + eps)
        for start in range(0, N, BLOCK):
            mask = start + cols < N
            y = tl.load(X + start + cols, mask=mask, other=0.0).to(tl.float32) * rstd
            if HAS_W:
                y = y * (tl.load(W + start + cols, mask=mask, other=0.0).to(tl.float32) + offset)
            tl.store(Y + start + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _ln_fwd(X, Y, W, B, MEAN, RSTD, stride_x, stride_y, N, eps,
            HAS_W: tl.constexpr, HAS_B: tl.constexpr, ONE_PASS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    X += row * stride_x
    Y += row * stride_y
    cols = tl.arange(0, BLOCK)
    if ONE_PASS:
        mask = cols < N
        x = tl.load(X + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / N
        xc = tl.where(mask, x - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / N + eps)
        y = xc * rstd
        if HAS_W:
            y = y * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_B:
            y = y + tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + cols, y.to(Y.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            acc += tl.load(X + start + cols, mask=start + cols < N, other=0.0).to(tl.float32)
        mean = tl.sum(acc, axis=0) / N
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            mask = start + cols < N
            xc = tl.where(mask, tl.load(X + start + cols, mask=mask, other=0.0).to(tl.float32) - mean, 0.0)
            acc += xc * xc
        rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / N + eps)
        for start in range(0, N, BLOCK):
            mask = start + cols < N
            y = (tl.load(X + start + cols, mask=mask, other=0.0).to(tl.float32) - mean) * rstd
            if HAS_W:
                y = y * tl.load(W + start + cols, mask=mask, other=0.0).to(tl.float32)
            if HAS_B:
                y = y + tl.load(B + start + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(Y + start + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)


@triton.jit
def _norm_bwd(DY, X, W, MEAN, RSTD, DX, DW, DB, stride_dy, stride_x, stride_dx, M, N,
              rows_per_program, offset,
              IS_LN: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
              ONE_PASS: tl.constexpr, BLOCK: tl.constexpr):
    """dx = r * (g - [mean(g)] - xhat * mean(g * xhat)), g = dy * w; [..] for LayerNorm only."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    row_start = pid.to(tl.int64) * rows_per_program  # int64 rows: offsets past 2^31 elements
    row_end = tl.minimum(row_start + rows_per_program, M)
    dw_acc = tl.zeros([BLOCK], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK], dtype=tl.float32)
    for row in range(row_start, row_end):
        r64 = row
        rstd = tl.load(RSTD + r64)
        mean = tl.load(MEAN + r64) if IS_LN else 0.0
        if ONE_PASS:
            mask = cols < N
            x = tl.load(X + r64 * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + r64 * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
            g = dy
            if HAS_W:
                g = dy * (tl.load(W + cols, mask=mask, other=0.0).to(tl.float32) + offset)
            c1 = tl.sum(g * xhat, axis=0) / N
            c2 = tl.sum(g, axis=0) / N if IS_LN else 0.0
            dx = rstd * (g - c2 - xhat * c1)
            tl.store(DX + r64 * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
            dw_acc += dy * xhat
            db_acc += dy
        else:
            acc1 = tl.zeros([BLOCK], dtype=tl.float32)
            acc2 = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, N, BLOCK):
                mask = start + cols < N
                x = tl.load(X + r64 * stride_x + start + cols, mask=mask, other=0.0).to(tl.float32)
                g = tl.load(DY + r64 * stride_dy + start + cols, mask=mask, other=0.0).to(tl.float32)
                if HAS_W:
                    g = g * (tl.load(W + start + cols, mask=mask, other=0.0).to(tl.float32) + offset)
                acc1 += g * tl.where(mask, (x - mean) * rstd, 0.0)
                acc2 += g
            c1 = tl.sum(acc1, axis=0) / N
            c2 = tl.sum(acc2, axis=0) / N if IS_LN else 0.0
            for start in range(0, N, BLOCK):
                mask = start + cols < N
                x = tl.load(X + r64 * stride_x + start + cols, mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(DY + r64 * stride_dy + start + cols, mask=mask, other=0.0).to(tl.float32)
                xhat = tl.where(mask, (x - mean) * rstd, 0.0)
                g = dy
                if HAS_W:
                    g = dy * (tl.load(W + start + cols, mask=mask, other=0.0).to(tl.float32) + offset)
                dx = rstd * (g - c2 - xhat * c1)
                tl.store(DX + r64 * stride_dx + start + cols, dx.to(DX.dtype.element_ty), mask=mask)
                if HAS_W:
                    part = DW + pid.to(tl.int64) * N + start + cols
                    tl.store(part, tl.load(part, mask=mask, other=0.0) + dy * xhat, mask=mask)
                if HAS_B:
                    part = DB + pid.to(tl.int64) * N + start + cols
                    tl.store(part, tl.load(part, mask=mask, other=0.0) + dy, mask=mask)
    if ONE_PASS:
        mask = cols < N
        if HAS_W:
            tl.store(DW + pid.to(tl.int64) * N + cols, dw_acc, mask=mask)
        if HAS_B:
            tl.store(DB + pid.to(tl.int64) * N + cols, db_acc, mask=mask)


def _block(n: int) -> tuple[int, bool]:
    block = min(triton.next_power_of_2(n), MAX_BLOCK)
    return block, n <= block


def _warps(block: int) -> int:
    return max(1, min(16, block // 256))


def _programs(rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(rows, 4 * sms))
    return max(1, min(rows, 4))


def rms_forward(x: torch.Tensor, weight: torch.Tensor | None, eps: float, offset: float):
    """x [M, N] (last dim contiguous) -> (y [M, N], rstd [M] float32)."""
    m, n = x.shape
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    block, one = _block(n)
    _rms_fwd[(m,)](x, y, weight if weight is not None else x, rstd, x.stride(0), y.stride(0), n, eps,
                   offset, HAS_W=weight is not None, ONE_PASS=one, BLOCK=block, num_warps=_warps(block))
    return y, rstd


def ln_forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float):
    """x [M, N] -> (y [M, N], mean [M], rstd [M]), statistics float32."""
    m, n = x.shape
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    mean = torch.empty(m, dtype=torch.float32, device=x.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    block, one = _block(n)
    _ln_fwd[(m,)](x, y, weight if weight is not None else x, bias if bias is not None else x, mean, rstd,
                  x.stride(0), y.stride(0), n, eps, HAS_W=weight is not None, HAS_B=bias is not None,
                  ONE_PASS=one, BLOCK=block, num_warps=_warps(block))
    return y, mean, rstd


def norm_backward(dy, x, weight, mean, rstd, *, is_ln: bool, has_bias: bool, offset: float = 0.0):
    """(dx, dweight float32 | None, dbias float32 | None) for both norms; mean None for RMSNorm."""
    m, n = x.shape
    dx = torch.empty((m, n), dtype=x.dtype, device=x.device)
    programs = _programs(m, x.device)
    rows_per = triton.cdiv(m, programs)
    programs = triton.cdiv(m, rows_per)
    block, one = _block(n)
    has_w = weight is not None
    dw = torch.zeros((programs, n), dtype=torch.float32, device=x.device) if has_w else None
    db = torch.zeros((programs, n), dtype=torch.float32, device=x.device) if has_bias else None
    _norm_bwd[(programs,)](dy, x, weight if has_w else x, mean if mean is not None else rstd, rstd, dx,
                           dw if has_w else rstd, db if has_bias else rstd,
                           dy.stride(0), x.stride(0), dx.stride(0), m, n, rows_per, offset,
                           IS_LN=is_ln, HAS_W=has_w, HAS_B=has_bias, ONE_PASS=one, BLOCK=block,
                           num_warps=_warps(block))
    return dx, dw.sum(0) if has_w else None, db.sum(0) if has_bias else None
