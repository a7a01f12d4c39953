"""Fused dequantize-matmul for QuantLinear (Triton), for 2-, 4- and 8-bit codes.

y[M, N] = x[M, K] @ W^T + bias, W[n, k] = scales[n, g] * (code[n, k] - zeros[n, g]),
g = g_idx[k], code[n, k] = bits (k % per)*bits.. of qweight[n, k // per], per = 32 // bits
(the layout of normtweak.quant.pack). The weight is never materialised in memory.

Used by QuantLinear.forward for CUDA inputs. On a machine without a GPU the kernel
runs only under TRITON_INTERPRET=1 (set before this module is imported), which is how
the tests check it against the PyTorch path; it has not been timed on a GPU.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is a Linux dependency
    triton = None


def supported(bits: int) -> bool:
    """Whether the fused kernel handles this code width (whole codes per int32 word)."""
    return triton is not None and 32 % bits == 0


if triton is not None:

    @triton.jit
    def _dequant_matmul_kernel(
        x_ptr, qw_ptr, s_ptr, z_ptr, g_ptr, b_ptr, y_ptr,
        M, N, K,
        stride_xm, stride_qn, stride_sn, stride_ym,
        BITS: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        PER: tl.constexpr = 32 // BITS
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = rm < M
        mask_n = rn < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mask_k = rk < K
            x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :],
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
            wmask = mask_k[:, None] & mask_n[None, :]
            words = tl.load(qw_ptr + rn[None, :] * stride_qn + (rk // PER)[:, None],
                            mask=wmask, other=0)
            codes = (words >> ((rk % PER) * BITS)[:, None]) & ((1 << BITS) - 1)
            g = tl.load(g_ptr + rk, mask=mask_k, other=0)
            s = tl.load(s_ptr + rn[None, :] * stride_sn + g[:, None], mask=wmask, other=0.0)
            z = tl.load(z_ptr + rn[None, :] * stride_sn + g[:, None], mask=wmask, other=0.0)
            w = (codes.to(tl.float32) - z.to(tl.float32)) * s.to(tl.float32)  # [BK, BN]
            acc += tl.dot(x, w, input_precision="ieee")  # no TF32: match the reference
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc,
                 mask=mask_m[:, None] & mask_n[None, :])


def dequant_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    g_idx: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block: tuple[int, int, int] = (16, 32, 32),
) -> torch.Tensor:
    """x [..., K] -> [..., N] in x's dtype (accumulation in float32)."""
    if not supported(bits):
        raise ValueError(f"the fused kernel needs triton and bits in (2, 4, 8), got {bits}")
    k = x.shape[-1]
    x2 = x.reshape(-1, k).contiguous()
    m, n = x2.shape[0], qweight.shape[0]
    y = torch.empty(m, n, dtype=torch.float32, device=x.device)
    bm, bn, bk = block
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    qw, s, z = qweight.contiguous(), scales.contiguous(), zeros.contiguous()
    _dequant_matmul_kernel[grid](
        x2, qw, s, z, g_idx.contiguous(), bias if bias is not None else s, y,
        m, n, k, x2.stride(0), qw.stride(0), s.stride(0), y.stride(0),
        BITS=bits, HAS_BIAS=bias is not None, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
    )
    return y.to(x.dtype).reshape(*x.shape[:-1], n)
