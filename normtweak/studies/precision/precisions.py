"""Training and evaluation at one precision, and post-training quantization of a trained model.

Training precisions: fp32; fp16 / bf16 mixed precision (torch.autocast; fp16 with a
GradScaler). Post-training precisions take the trained fp32 model and change a copy:
int8-toy (the seed's norm with 8-bit fake-quantized output, normtweak.studies.int8.Int8Norm),
w8a8 (per-channel int8 weights, per-token dynamic int8 activations), w4-rtn (per-channel),
w4-gptq, and each w4 mode with "-tweak" (the norm-tweak pipeline, calibrated on train text).
Weight-only modes take any width 2..8: w3-rtn, w2-gptq-tweak, ...
"""

from __future__ import annotations

import copy
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

TRAIN_PRECISIONS = ("fp32", "fp16", "bf16")
PTQ_PRECISIONS = ("int8-toy", "w8a8", "w4-rtn", "w4-rtn-tweak", "w4-gptq", "w4-gptq-tweak")
PRECISIONS = TRAIN_PRECISIONS + PTQ_PRECISIONS
WEIGHT_ONLY = re.compile(r"w([2-8])-(rtn|gptq)(-tweak)?")


def is_post_training(name: str) -> bool:
    return name in PTQ_PRECISIONS or WEIGHT_ONLY.fullmatch(name) is not None


def check_precisions(names: list[str]) -> None:
    bad = [n for n in names if n not in TRAIN_PRECISIONS and not is_post_training(n)]
    if bad:
        raise ValueError(f"unknown precision(s) {bad}; choose from {', '.join(PRECISIONS)} "
                         "(weight-only modes take any width 2..8: w3-rtn, w2-gptq-tweak)")


def autocast(precision: str, device: torch.device):
    """The autocast context of a training precision (nullcontext for fp32 and PTQ modes)."""
    if precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(device.type, dtype=dtype)
    return nullcontext()


def unsupported(precision: str, device: torch.device) -> str | None:
    """Why `precision` cannot run on `device` (None when it can).

    Probed with one small matmul under autocast: what torch supports on CPU changes
    between versions, and a probe is the only honest answer on this install.
    """
    if precision not in ("fp16", "bf16"):
        return None
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    try:
        x = torch.ones(2, 2, device=device)
        with torch.autocast(device.type, dtype=dtype):
            y = x @ x
    except (RuntimeError, TypeError) as err:
        return f"{precision} autocast is not supported on {device.type} by torch {torch.__version__}: {err}"
    if y.dtype != dtype:
        return f"{precision} autocast on {device.type} computes in {y.dtype} with torch {torch.__version__}"
    return None


def batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


@dataclass(frozen=True)
class TrainSpec:
    """How `train` trains: `epochs` passes in batches of `batch_size`, AdamW with a one-cycle
    schedule peaking at `lr`."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3


def train(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, precision: str,
          spec: TrainSpec | None = None, seed: int = 0,
          device: torch.device | None = None) -> float:
    """Train in place with AdamW at `precision`; returns seconds."""
    spec = spec or TrainSpec()
    epochs, batch_size, lr = spec.epochs, spec.batch_size, spec.lr
    device = device or torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * len(batches(len(ids), batch_size, None))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in batches(len(ids), batch_size, gen):
            with autocast(precision, device):
                logits = model(ids[idx].to(device), mask[idx].to(device))
                loss = nn.functional.cross_entropy(logits.float(), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
    model.eval()
    return time.perf_counter() - t0


@torch.no_grad()
def evaluate(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, precision: str,
             batch_size: int = 128, device: torch.device | None = None) -> tuple[float, float]:
    """(accuracy, seconds) at `precision`."""
    device = device or torch.device("cpu")
    model.to(device).eval()
    correct, t0 = 0, time.perf_counter()
    for idx in batches(len(ids), batch_size, None):
        with autocast(precision, device):
            logits = model(ids[idx].to(device), mask[idx].to(device))
        correct += int((logits.argmax(-1).cpu() == labels[idx]).sum())
    return correct / len(ids), time.perf_counter() - t0


def post_training(model: nn.Module, precision: str, calibration: torch.Tensor | None,
                  tweak_lr: float = 1e-4) -> tuple[nn.Module, float]:
    """(a quantized copy of the trained fp32 `model`, seconds) for a PTQ precision."""
    from normtweak.config import QuantSpec, RunSpec, TweakSpec
    from normtweak.quant import quantize_model
    from normtweak.studies.int8 import quantize_model_w8a8, wrap_norms_int8
    from normtweak.tweak.pipeline import tweak_model

    q = copy.deepcopy(model).eval()
    t0 = time.perf_counter()
    if precision == "int8-toy":
        wrap_norms_int8(q)
    elif precision == "w8a8":
        quantize_model_w8a8(q)
    else:
        match = WEIGHT_ONLY.fullmatch(precision)
        if match is None:
            raise ValueError(f"{precision!r} is not a post-training precision")
        method = match.group(2)
        spec = QuantSpec(bits=int(match.group(1)), group_size=-1, symmetric=False, method=method)
        if match.group(3):
            # keep_better off: the study's committed results predate it (norm tweaking as
            # the paper has it, every block's training kept)
            tweak_model(q, calibration, spec, TweakSpec.preset("paper", lr=tweak_lr),
                        RunSpec(progress=False))
        else:
            quantize_model(q, spec, calibration=calibration if method == "gptq" else None,
                           run=RunSpec(progress=False))
    return q, time.perf_counter() - t0
