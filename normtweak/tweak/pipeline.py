"""The block-wise norm-tweaking loop (paper, Algorithm 1): the one place that orchestrates.

For each block l = 0..L-1, in order:
  1. its inputs X_l are the outputs of the already quantized-and-tweaked blocks
     before it (for l = 0, the embeddings of the calibration set);
  2. the float block maps X_l to the targets Y_f (option: the float model's own
     hidden states instead of X_l, TweakSpec.target="float_input");
  3. the block's linears are quantized (RTN, or GPTQ with its Hessian from X_l);
  4. only the block's norm parameters are trained with Adam at
     lr_l = lr * (1 + scale * l / L) to minimise loss(Y_f, block_q(X_l));
  5. the tweaked quantized block maps X_l to X_{l+1}.
Each block is moved to the device, processed and moved back, so the device holds
one block and one batch at a time. Activations live in ActivationStores: CPU memory
while an ActivationBudget allows, a memory-mapped temporary file beyond it (results
are identical either way). A `block_loader` can fill a block's weights just before
its turn (normtweak.tweak.offload: models larger than RAM). What happens to one block
(steps 3-5) is normtweak.tweak.train; the optional end-to-end pass after the loop is
normtweak.tweak.end_to_end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from normtweak import __version__, arch, dist
from normtweak.calib.store import calibration_hash
from normtweak.config import QuantSpec, TweakSpec
from normtweak.norms import kernel_norms as norm_modules
from normtweak.quant.model import replace_with_shells, say_group_fallbacks
from normtweak.tweak.activations import ActivationBudget, ActivationStore, as_budget
from normtweak.tweak.checkpoint import CheckpointDir
from normtweak.tweak.end_to_end import float_teacher, run_end_to_end
from normtweak.tweak.train import (
    BlockResult,
    NonFiniteActivationError,
    check_finite,
    process_block,
    run_all,
)

__all__ = ["BlockLoader", "BlockResult", "NonFiniteActivationError", "Start", "TweakResult",
           "as_input_ids", "prepare_start", "tweak_model"]


@dataclass
class TweakResult:
    blocks: list[BlockResult] = field(default_factory=list)
    seconds: float = 0.0
    end_to_end: dict | None = None  # kl_before, kl_after, steps, seconds

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "blocks": [asdict(b) for b in self.blocks],
                **({"end_to_end": self.end_to_end} if self.end_to_end else {})}


@dataclass
class Start:
    """Work every run on the same model and calibration shares (a grid search reuses it).

    inputs: block 0's inputs per batch and each block's captured call arguments.
    targets0: block 0's float outputs per batch.
    budget: the activation budget these stores draw on (runs using this start share it).
    """

    inputs: arch.BlockInputs
    targets0: ActivationStore
    calibration_hash: str
    batch_size: int
    budget: ActivationBudget


def as_input_ids(calibration) -> torch.Tensor:
    """Token ids [N, T] from a tensor or anything with `.input_ids` (a CalibrationSet)."""
    ids = getattr(calibration, "input_ids", calibration)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point:
        raise ValueError("calibration must be integer token ids [num_samples, seq_len] "
                         "or a CalibrationSet")
    return ids.long()


BlockLoader = Callable[[int, nn.Module], None]


@torch.no_grad()
def prepare_start(model: nn.Module, calibration, batch_size: int = 1,
                  device: torch.device | str = "cpu", activations=None,
                  block_loader: BlockLoader | None = None) -> Start:
    """Capture block 0's inputs and compute its float outputs, once.

    activations: an ActivationBudget or a size ('8GiB'); None keeps them in memory.
    The parts outside the blocks (embeddings, ...) go to `device` for the capture and
    back where they were after it.
    """
    ids = as_input_ids(calibration)
    full_hash, ids = calibration_hash(ids), dist.shard_samples(ids, batch_size)  # rank's share
    budget = as_budget(activations)
    adapter = arch.get_adapter(model)
    outside = arch.device_of(adapter.get_embeddings(model))
    inputs = arch.capture_block_inputs(model, list(ids.split(batch_size)), device=device,
                                       hidden=budget.store())
    arch._non_block_to(model, adapter, outside)
    check_finite(inputs.hidden, "embeddings")
    block = adapter.get_blocks(model)[0]
    if block_loader is not None:
        block_loader(0, block)
    home = arch.device_of(block)
    block.to(device)
    targets, _ = run_all(block, inputs.hidden, inputs, 0, device, budget.store())
    block.to(home)
    return Start(inputs, targets, full_hash, batch_size, budget)


def tweak_model(
    model: nn.Module,
    calibration,
    quant: QuantSpec,
    tweak: TweakSpec,
    *,
    device: torch.device | str = "cpu",
    checkpoint_dir: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    seed: int = 0,
    start: Start | None = None,
    on_block_done: Callable[[int], None] | None = None,
    activations=None,
    block_loader: BlockLoader | None = None,
    kernel_norms: bool | None = None,
    true_sequential: bool = False,
    imported: dict | None = None,
    scale_dtype: torch.dtype | None = None,
) -> TweakResult:
    """Quantize `model` block by block and tweak each block's norms, in place.

    calibration: token ids [N, T] or a CalibrationSet (tweak.num_samples caps N).
    checkpoint_dir/resume: write each finished block there; with resume, skip the
    blocks already there (the result is identical to an uninterrupted run). Existing
    checkpoints without resume: ValueError, unless overwrite (then they are discarded).
    on_block_done(index): called after each block's checkpoint is written.
    imported: name -> QuantLinear of a checkpoint someone else quantized
    (normtweak.io.load_quantized_linears): each block takes these instead of being
    quantized here (`quant` must describe them: normtweak.io.imported_spec).
    activations: ActivationBudget or size ('8GiB') for the activations kept in memory;
    beyond it they go to a memory-mapped temp file (default: start's budget, else all
    in memory).
    block_loader(index, block): fills a block's weights before its turn (lazy loading).
    kernel_norms: train through normtweak.norms modules (Triton kernels) instead of the
    model's own norm modules; default: on CUDA devices, where the kernels run compiled.
    true_sequential: GPTQ quantizes a block's linears group by group (quant.model).
    scale_dtype: the dtype the target format stores scales in (normtweak.io.scales
    FORMAT_SCALE_DTYPES, e.g. float16 for GPTQ and GGUF): each block's scales are rounded
    to it before tweaking (and again after joint tuning), so the norms compensate the
    weights that will be served.
    """
    ids = as_input_ids(calibration)
    teacher = float_teacher(model, tweak, block_loader)
    if kernel_norms is None:
        kernel_norms = torch.device(device).type == "cuda"
    if tweak.num_samples is not None:
        ids = ids[: tweak.num_samples]
    adapter = arch.get_adapter(model)
    blocks = adapter.get_blocks(model)
    say_group_fallbacks(quant, blocks, progress)
    attach = None
    if imported is not None:
        from normtweak.io.attach import attach_to_block

        def attach(block):
            return {n: block.get_submodule(n) for n in attach_to_block(model, block, imported)}
    own_start = start is None
    if own_start:
        start = prepare_start(model, ids, tweak.batch_size, device, activations, block_loader)
    elif start.batch_size != tweak.batch_size or start.calibration_hash != calibration_hash(ids):
        raise ValueError("the shared start was made for other calibration data or batch size")
    budget = start.budget if activations is None else as_budget(activations)
    new_store = budget.store
    ckpt = None
    done = 0
    if checkpoint_dir is not None:
        ckpt = CheckpointDir(checkpoint_dir, _run_info(model, quant, tweak, start, seed, scale_dtype))
        ckpt = dist.main_rank_checkpoint(ckpt)  # rank 0 reads and writes the files
        done = ckpt.start(resume, overwrite)
    result = TweakResult()
    t0 = time.perf_counter()
    hidden = start.inputs.hidden
    float_hidden = start.inputs.hidden  # the float model's own stream, for target="float_input"
    from_float = tweak.target == "float_input"
    label = "normtweak" if tweak.enabled else "plain quantization (baseline, no tweak)"
    bar = tqdm(range(len(blocks)), desc=f"{label} {quant.method} W{quant.bits}",
               disable=not progress or not dist.is_main())
    for index in bar:
        block = blocks[index]
        if block_loader is not None:
            block_loader(index, block)
        home = arch.device_of(block)
        block.to(device)
        tb = time.perf_counter()
        if from_float and index > 0:
            float_targets, _ = run_all(block, float_hidden, start.inputs, index, device, new_store())
        if index < done:
            if from_float:
                float_hidden = float_targets if index > 0 else start.targets0
            replace_with_shells(block, quant)
            ckpt.load_block(index, block)
            hidden, _ = run_all(block, hidden, start.inputs, index, device, new_store())
            res = BlockResult(index, tweak.block_lr(index, len(blocks)), float("nan"),
                              float("nan"), 0.0, resumed=True)
        else:
            if index == 0:
                targets = start.targets0
            elif from_float:
                targets = float_targets
            else:
                targets, _ = run_all(block, hidden, start.inputs, index, device, new_store())
            float_hidden = targets if from_float else float_hidden
            with norm_modules(block, kernel_norms, adapter.norm_offset):
                hidden, res = process_block(block, index, len(blocks), hidden, targets, start.inputs,
                                             quant, tweak, device, seed, new_store,
                                             true_sequential, attach, scale_dtype,
                                             progress=progress)
            res.seconds = time.perf_counter() - tb
            targets = None  # free this block's targets before the next block makes its own
        block.to(home)
        dist.check_same(block, f"block {index}")
        if ckpt is not None and index >= done:
            ckpt.save_block(index, block)
        result.blocks.append(res)
        bar.set_postfix(loss="restored from checkpoint" if res.resumed else
                        f"{res.loss_before:.3g}->{res.loss_after:.3g}"
                        + (" (kept start)" if res.kept_start else "") if tweak.enabled else
                        f"{res.loss_after:.3g}")
        if own_start and index == 0:  # nobody else shares the start: free its activations
            start.inputs.hidden, start.targets0 = [], None
        if on_block_done is not None and index >= done:
            on_block_done(index)
    if teacher is not None:
        result.end_to_end = run_end_to_end(model, teacher, ids, tweak, device, seed, progress)
    result.seconds = time.perf_counter() - t0
    return result


def _run_info(model, quant, tweak, start, seed, scale_dtype=None) -> dict:
    return {
        **({"scale_dtype": str(scale_dtype)} if scale_dtype is not None else {}),
        "model": str(getattr(model.config, "name_or_path", "")),
        "model_type": model.config.model_type,
        "num_blocks": len(arch.get_adapter(model).get_blocks(model)),
        "quant": quant.as_dict(),
        "tweak": tweak.as_dict(),
        "calibration_sha256": start.calibration_hash,
        "seed": seed,
        "normtweak_version": __version__,
        **dist.run_info(),
    }
