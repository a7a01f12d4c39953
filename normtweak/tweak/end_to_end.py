"""End-to-end norm tweaking (the original project's TODO; beyond the paper, opt-in).

After the block pass, every norm of the quantized model (each block's norms and the final
norm, which the block pass never sees) trains jointly so that the model's next-token
distribution matches the float model's on the calibration set:

  L = mean over tokens of KL(p_float || p_quant),  p = softmax(logits / T)

Only norm weights and biases change; the quantized linears' codes, scales and zero points
are buffers and stay as they are, so the saved format is unchanged. The float model is
the teacher and runs without gradients, batch by batch (nothing is precomputed).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from normtweak import arch, dist
from normtweak.config import TweakSpec


def logits_kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float = 1.0
              ) -> torch.Tensor:
    """Mean over positions of KL(softmax(teacher / T) || softmax(student / T)), in float32.

    teacher, student: [..., vocab] logits of the same positions.
    """
    t = torch.log_softmax(teacher.float() / temperature, dim=-1)
    s = torch.log_softmax(student.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(dim=-1).mean()


def model_norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every norm weight and bias: each block's norms, then the final norm (if any)."""
    adapter = arch.get_adapter(model)
    params = []
    for block in adapter.get_blocks(model):
        for _, norm in arch.block_norms(block):
            params += list(norm.parameters(recurse=False))
    final = adapter.get_final_norm(model)
    if final is not None:
        params += list(final.parameters(recurse=False))
    return params


@dataclass
class EndToEndResult:
    kl_before: float
    kl_after: float
    steps: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EndToEndSpec:
    """How the norms train end to end: Adam at `lr`, `iters` passes over the calibration set
    in batches of `batch_size`, the KL taken at `temperature`."""

    lr: float = 1e-5
    iters: int = 1
    batch_size: int = 1
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"end-to-end lr must be a finite positive number, got {self.lr}")
        if self.iters < 1:
            raise ValueError(f"end-to-end iters must be >= 1, got {self.iters}")
        if self.batch_size < 1:
            raise ValueError(f"end-to-end batch_size must be >= 1, got {self.batch_size}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite positive number, got "
                             f"{self.temperature}")


@torch.no_grad()
def mean_kl(model: nn.Module, teacher: nn.Module, batches: list[torch.Tensor],
            temperature: float = 1.0) -> float:
    """The loss above, averaged over `batches` of token ids (no training)."""
    total = 0.0
    for ids in batches:
        total += logits_kl(teacher(input_ids=ids).logits, model(input_ids=ids).logits,
                           temperature).item()
    return total / len(batches)


def tweak_end_to_end(model: nn.Module, teacher: nn.Module, input_ids: torch.Tensor,
                     spec: EndToEndSpec | None = None, *, seed: int = 0, progress: bool = True
                     ) -> EndToEndResult:
    """Train all of `model`'s norm parameters (Adam, `spec.iters` passes over `input_ids`
    [N, T] in batches) to match `teacher`'s (the float model's) token distributions. In place.

    Both models must sit on the same device as `input_ids`. Returns the mean KL on the
    calibration set before and after.
    """
    spec = spec or EndToEndSpec()
    lr, iters, batch_size, temperature = spec.lr, spec.iters, spec.batch_size, spec.temperature
    if input_ids.ndim != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids must be [N, T] with N >= 1, got {tuple(input_ids.shape)}")
    norms = model_norm_parameters(model)
    if not norms:
        raise ValueError(f"{type(model).__name__} has no norm parameters to tweak")
    batches = list(input_ids.split(batch_size))
    flags = {id(p): p.requires_grad for p in model.parameters()}
    t0 = time.perf_counter()
    teacher.eval()
    model.eval()
    before = mean_kl(model, teacher, batches, temperature)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in norms:
        p.requires_grad_(True)
    opt = torch.optim.Adam(norms, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps = iters * len(batches)
    bar = tqdm(total=steps, desc="end-to-end tweak (all norms, KL to float)",
               disable=not progress)
    try:
        with torch.enable_grad():
            for _ in range(iters):
                for b in torch.randperm(len(batches), generator=gen).tolist():
                    with torch.no_grad():
                        target = teacher(input_ids=batches[b]).logits
                    loss = logits_kl(target, model(input_ids=batches[b]).logits, temperature)
                    if not torch.isfinite(loss):
                        raise FloatingPointError("end-to-end tweaking diverged (non-finite "
                                                 "KL): lower the end-to-end lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    dist.average_gradients(norms)  # ranks stay in step (a no-op alone)
                    opt.step()
                    bar.update(1)
                    bar.set_postfix(kl=f"{loss.item():.4g}")
    finally:
        bar.close()
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), False))
    after = mean_kl(model, teacher, batches, temperature)
    return EndToEndResult(before, after, steps, time.perf_counter() - t0)


def float_teacher(model, tweak: TweakSpec, block_loader):
    """A float copy of `model` for end-to-end tweaking (None when it is off)."""
    if tweak.end_to_end_iters == 0:
        return None
    if block_loader is not None:
        raise ValueError("end-to-end tweaking keeps a float copy of the whole model: it does "
                         "not combine with lazy loading (--lazy-load)")
    return copy.deepcopy(model)


def run_end_to_end(model, teacher, ids, tweak: TweakSpec, device, seed, progress) -> dict:
    """Every norm against the float model's logits, after the block pass (tweak.end_to_end)."""
    homes = arch.device_of(model), arch.device_of(teacher)
    model.to(device)
    teacher.to(device)
    try:
        spec = EndToEndSpec(lr=tweak.end_to_end_lr, iters=tweak.end_to_end_iters,
                            batch_size=tweak.batch_size)
        res = tweak_end_to_end(model, teacher, ids.to(device), spec, seed=seed,
                               progress=progress and dist.is_main())
    finally:
        model.to(homes[0])
    return res.as_dict()
