"""TweakSpec: how each quantized block is tuned (the joint method by default; the paper's
Algorithm 1 as a preset), and the calibration window length each mode defaults to."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

TWEAK_LOSSES = ("dist", "dist_mse", "mse", "rel_mse", "none")
TWEAK_TARGETS = ("quantized_input", "float_input")
QUANT_PARAMS = ("none", "clip", "clip_round")
TRAIN_DTYPES = ("float32", "bfloat16")


def check_lr(lr: float) -> None:
    if not (lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite non-negative number, got {lr}")


def check_scale(scale: float) -> None:
    """The layer scale: block l of L trains at lr * (1 + scale * l / L), positive for every
    l < L and every L exactly when scale >= -1."""
    if not (math.isfinite(scale) and scale >= -1):
        raise ValueError(f"scale must be a finite number >= -1 (block l of L trains at "
                         f"lr * (1 + scale * l / L), which a scale below -1 makes negative for "
                         f"the last blocks), got {scale}")


@dataclass(frozen=True)
class TweakSpec:
    """How each quantized block is tuned. The defaults are normtweak's best measured method,
    the `joint` preset; `TweakSpec.preset("paper")` is the paper's Algorithm 1 as written.

    Block l of L trains its norm weights with Adam at lr_l = lr * (1 + scale * l / L)
    (the paper's layer scale) for `iters` passes over the calibration samples in batches of
    `batch_size`. Beyond the paper (the joint defaults), each quantized linear's clipping and
    rounding train with the norms ("clip_round"), by the per-token relative MSE against the
    float model's own hidden states, and a block that training made worse is put back.

    target: what the float block is run on to make the targets. "quantized_input" (the
    paper): the same inputs X_l the quantized block gets. "float_input": the float
    model's own hidden states, so tweaking also pulls back error accumulated upstream.
    """

    # 1e-4: best of 1e-5 / 1e-4 / 1e-3 on SmolLM2's validation split at RTN W4
    # (results/tweak_ablation.json); the paper's larger models use smaller rates: grid-search.
    lr: float = 1e-4
    scale: float = 5.0
    # 3 passes in batches of 8 (48 steps per block at 128 samples): SignRound's batch; the
    # joint mode was measured with it (README, Results).
    iters: int = 3
    batch_size: int = 8
    # rel_mse: each token's squared error over its float output's squared norm; won over plain
    # MSE on validation at W4 g64, W3 g64 and W4 per-channel (SmolLM2's massive first-token
    # activations carry up to 95% of a block's plain MSE: benchmarks/token_error_share.py).
    loss: str = "rel_mse"
    num_samples: int | None = None
    target: str = "float_input"
    # Also train each quantized linear's clipping ("clip": scales and zero points) and
    # rounding ("clip_round") by the same loss, with signed gradient steps of quant_lr
    # decayed linearly to 0 (normtweak.quant.tunable).
    # None: min(1 / steps per block, 2e-2). 1 / steps is SignRound's rule (the steps add
    # up to about half a rounding level); the cap: with few steps, 1/6 moved every clipping
    # factor so far that SmolLM2 blocks 5 and 20 doubled their held-out output error,
    # while 2e-2 cut it by 44% (block 20; 5e-3, 1e-2 and 5e-2 did less).
    quant_params: str = "clip_round"
    quant_lr: float | None = None
    # Beyond the paper (opt-in): after the block pass, every norm (the final one too)
    # trains jointly for end_to_end_iters passes against the float model's token
    # distributions (KL on the logits), Adam at end_to_end_lr (normtweak.tweak.end_to_end).
    end_to_end_iters: int = 0
    end_to_end_lr: float = 1e-5
    # Keep a block's training only if it lowered the block's loss on the calibration set;
    # else restore the block as it started (norms and quantized linears). AutoRound keeps
    # its best iteration for the same reason. Measured need: joint tuning from GPTQ codes
    # raised SmolLM2 block 0's W4 g64 output MSE from 0.0111 to 0.0247 (train) at
    # quant_lr 2e-2 and to 0.0165 at 5e-3 (benchmarks/block_diagnosis.py, 16 x 512).
    keep_better: bool = True
    # Within a block, end at the step whose minibatch loss was the lowest (measured before
    # that step's update) instead of at the last step: AutoRound's best-iteration rule.
    # Off by default; with keep_better the chosen state must still beat the block's start.
    best_step: bool = False
    # The dtype of the block's forward in the training steps ("bfloat16": autocast, what
    # AutoRound does by default where the CPU has bf16); parameters, loss and every other
    # pass stay float32.
    train_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_lr(self.lr)
        check_scale(self.scale)
        if self.iters < 0:
            raise ValueError(f"iters must be >= 0, got {self.iters}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.loss not in TWEAK_LOSSES:
            raise ValueError(f"loss must be one of {TWEAK_LOSSES}, got {self.loss!r}")
        if self.target not in TWEAK_TARGETS:
            raise ValueError(f"target must be one of {TWEAK_TARGETS}, got {self.target!r}")
        if self.quant_params not in QUANT_PARAMS:
            raise ValueError(f"quant_params must be one of {QUANT_PARAMS}, got "
                             f"{self.quant_params!r}")
        if self.quant_lr is not None and not (self.quant_lr > 0 and math.isfinite(self.quant_lr)):
            raise ValueError(f"quant_lr must be a finite positive number, got {self.quant_lr}")
        if self.end_to_end_iters < 0:
            raise ValueError(f"end_to_end_iters must be >= 0, got {self.end_to_end_iters}")
        if not (self.end_to_end_lr > 0 and math.isfinite(self.end_to_end_lr)):
            raise ValueError(f"end_to_end_lr must be a finite positive number, got "
                             f"{self.end_to_end_lr}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.train_dtype not in TRAIN_DTYPES:
            raise ValueError(f"train_dtype must be one of {TRAIN_DTYPES}, got "
                             f"{self.train_dtype!r}")
        for name in ("keep_better", "best_step"):  # "false" would read as true
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TweakSpec":
        """A named preset (TWEAK_PRESETS), with any field overridden.

        "paper": Algorithm 1 as written: one pass, batch 1, Adam on the norms only, the
        channel-wise distribution loss, lr_l = lr * (1 + scale * l / L), float targets from
        the quantized path's inputs, every block's training kept. "joint" (the defaults):
        norms plus each linear's clipping and rounding, per-token relative MSE against the
        float model's own stream, keep_better (beyond the paper; chosen over plain MSE on
        validation at W4 g64, W3 g64 and W4 per-channel).
        """
        if name not in TWEAK_PRESETS:
            raise ValueError(f"unknown tweak preset {name!r}; choose from {sorted(TWEAK_PRESETS)}")
        return cls(**{**TWEAK_PRESETS[name], **overrides})

    def block_lr(self, index: int, num_blocks: int) -> float:
        """Learning rate of block `index` (0-based) out of `num_blocks`."""
        return self.lr * (1.0 + self.scale * index / num_blocks)

    @property
    def enabled(self) -> bool:
        trains = self.lr > 0 or self.quant_params != "none"
        return self.loss != "none" and self.iters > 0 and trains

    def as_dict(self) -> dict:
        return asdict(self)


TWEAK_PRESETS = {
    "paper": dict(iters=1, batch_size=1, loss="dist", target="quantized_input",
                  quant_params="none", keep_better=False),
    "joint": dict(iters=3, batch_size=8, loss="rel_mse", target="float_input",
                  quant_params="clip_round", quant_lr=None, keep_better=True),
}


DEFAULT_SEQ_LEN = 128  # tokens per calibration sample (the paper's 2048 is slow on a CPU)
# ... when the quantization parameters train too (the joint preset): on 128-token windows it
# fitted the first token's massive activations and broke long contexts (README, Accuracy:
# W3 g64 validation 102.5 at 128 x 128 against 28.9 at 128 x 512)
DEFAULT_JOINT_SEQ_LEN = 512


def default_seq_len(seq_len: int | None, tweak: TweakSpec | None = None) -> int:
    """`seq_len` if given; else 512 when `tweak` trains quantization parameters, else 128."""
    if seq_len is not None:
        return seq_len
    if tweak is not None and tweak.quant_params != "none":
        return DEFAULT_JOINT_SEQ_LEN
    return DEFAULT_SEQ_LEN


