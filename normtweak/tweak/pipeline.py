"""normtweak's method, block by block: `tweak_model`.

For each block l = 0..L-1, in order (normtweak.walk.BlockPass walks them; the steps are
normtweak.tweak.steps):
  1. its inputs X_l are the outputs of the already quantized-and-tweaked blocks
     before it (for l = 0, the embeddings of the calibration set);
  2. the float block maps X_l to the targets Y_f (TweakSpec.target="float_input", the
     default: the float model's own hidden states instead of X_l);
  3. the block's linears are quantized (RTN, or GPTQ with its Hessian from X_l), or take an
     imported checkpoint's;
  4. its norm weights (and, in the joint mode, its linears' clipping and rounding) train to
     minimise loss(Y_f, block_q(X_l)), Adam at lr_l = lr * (1 + scale * l / L);
  5. a block that training made worse is put back as it started (keep_better);
  6. the tweaked quantized block maps X_l to X_{l+1}.
The optional end-to-end pass after the blocks is normtweak.tweak.end_to_end.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from torch import nn

from normtweak import __version__, arch, dist
from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.quant.model import check_model
from normtweak.tweak.checkpoint import CheckpointDir, weights_fingerprint
from normtweak.tweak.end_to_end import float_teacher, run_end_to_end
from normtweak.tweak.steps import tweak_steps
from normtweak.walk import (
    BlockLoader,
    BlockPass,
    BlockResult,
    NonFiniteActivationError,
    Start,
    as_input_ids,
    prepare_start,
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


def tweak_model(model: nn.Module, calibration, quant: QuantSpec, tweak: TweakSpec,
                run: RunSpec = RunSpec(), *, start: Start | None = None,
                block_loader: BlockLoader | None = None, imported: dict | None = None
                ) -> TweakResult:
    """Quantize `model` block by block and tweak each block, in place.

    calibration: token ids [N, T] or a CalibrationSet (tweak.num_samples caps N).
    run: device, seed, checkpoints (with run.resume, blocks already checkpointed are
    restored; the result is identical to an uninterrupted run), activation budget,
    kernels, the scale dtype of the saved format (RunSpec).
    start: block 0's captured inputs, shared by several runs (a grid search:
    normtweak.walk.prepare_start with tweak.batch_size).
    block_loader(index, block): fills a block's weights before its turn (lazy loading).
    imported: name -> QuantLinear of a checkpoint someone else quantized
    (normtweak.io.load_quantized_linears): each block takes these instead of being
    quantized here (`quant` must describe them: normtweak.io.imported_spec).
    """
    ids = as_input_ids(calibration)
    teacher = float_teacher(model, tweak, block_loader)
    if tweak.num_samples is not None:
        ids = ids[: tweak.num_samples]
    check_model(model, quant, run.progress)
    own_start = start is None
    if own_start:
        start = prepare_start(model, ids, tweak.batch_size, run, block_loader)
    elif start.batch_size != tweak.batch_size or start.calibration_hash != _hash(ids):
        raise ValueError("the shared start was made for other calibration data or batch size")
    checkpoint = None
    if run.checkpoint_dir is not None:
        checkpoint = dist.main_rank_checkpoint(  # rank 0 reads and writes the files
            CheckpointDir(run.checkpoint_dir, _run_info(model, quant, tweak, start, run,
                                                        block_loader)))
    label = "normtweak" if tweak.enabled else "plain quantization (baseline, no tweak)"
    steps = tweak_steps(model, quant, tweak, run, start, imported)
    t0 = time.perf_counter()
    walker = BlockPass(model, steps, run, label=f"{label} {quant.method} W{quant.bits}",
                       checkpoint=checkpoint, block_loader=block_loader)
    result = TweakResult(walker.walk(start, free_start=own_start))
    if teacher is not None:
        result.end_to_end = run_end_to_end(model, teacher, ids, tweak, run.device, run.seed,
                                           run.progress)
    result.seconds = time.perf_counter() - t0
    return result


def _hash(ids) -> str:
    from normtweak.calib.store import calibration_hash

    return calibration_hash(ids)


def _run_info(model, quant: QuantSpec, tweak: TweakSpec, start: Start, run: RunSpec,
              block_loader: BlockLoader | None = None) -> dict:
    """What a checkpoint folder records of its run (a resume must match it). Lazily loaded
    blocks are still on disk: their fingerprint is taken from the files."""
    fingerprint = weights_fingerprint(model)
    on_disk = getattr(block_loader, "fingerprint", None)  # a plain callable has none
    if on_disk is not None:
        fingerprint = f"{fingerprint}+{on_disk()}"
    return {
        **({"scale_dtype": run.scale_dtype} if run.scale_dtype is not None else {}),
        "model": str(getattr(model.config, "name_or_path", "")),
        "model_type": model.config.model_type,
        "num_blocks": len(arch.get_adapter(model).get_blocks(model)),
        "quant": quant.as_dict(),
        "tweak": tweak.as_dict(),
        "calibration_sha256": start.calibration_hash,
        "weights_fingerprint": fingerprint,
        "seed": run.seed,
        "normtweak_version": __version__,
        **dist.run_info(),
    }
