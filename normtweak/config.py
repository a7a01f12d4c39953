"""Frozen configuration dataclasses, validated once at construction.

`QuantSpec` says how weights are quantized, `TweakSpec` how norm weights are
tweaked, `GridSpec` which (lr, scale) points a grid search visits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

QUANT_METHODS = ("rtn", "gptq")
TWEAK_LOSSES = ("dist", "dist_mse", "mse", "rel_mse", "none")
TWEAK_TARGETS = ("quantized_input", "float_input")
QUANT_PARAMS = ("none", "clip", "clip_round")
GROUP_PARAMS = ("updated", "reference")
# Where a layer's in_features is not a multiple of the group size (SmolLM2's 576 = 4.5 x 128),
# the layer takes the largest of these below the group size that divides it (QuantSpec.for_layer).
FALLBACK_GROUP_SIZES = (128, 64, 32)


def weight_schemes() -> dict[str, dict]:
    """The field's weight-only integer schemes by name: compressed-tensors' presets (the names
    llm-compressor and vLLM use: W4A16 = 4-bit symmetric, group 128; W4A16_ASYM; W8A16; ...)
    whose activations stay in 16 bits, as QuantSpec fields."""
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    schemes = {}
    for name, scheme in PRESET_SCHEMES.items():
        w = scheme.get("weights") if isinstance(scheme, dict) else None
        if (w is None or w.type != "int" or scheme.get("input_activations") is not None
                or not 2 <= w.num_bits <= 8):
            continue
        schemes[name] = dict(bits=w.num_bits, symmetric=bool(w.symmetric),
                             group_size=w.group_size if w.strategy == "group" else -1)
    return schemes


@dataclass(frozen=True)
class QuantSpec:
    """Weight quantization settings. The defaults are the field's W4A16: 4-bit symmetric codes,
    one scale per 128 inputs (llm-compressor's and AutoRound's default; what vLLM's Marlin
    kernels and plain transformers load). `QuantSpec.scheme("W3A16")` names others.

    group_size: -1 = one scale per output channel, 0 = one scale per tensor,
    g > 0 = one scale per g consecutive input features of each output channel. Where g does
    not divide a layer's in_features, group_fallback gives that layer the largest of
    FALLBACK_GROUP_SIZES below g that does (`for_layer`; the saved format records each
    layer's own), else the layer is refused.
    """

    bits: int = 4
    group_size: int = 128
    symmetric: bool = True
    method: str = "rtn"
    # GPTQ. act_order + static_groups: the field's default (llm-compressor's actorder
    # "static"): columns in order of decreasing Hessian diagonal, group parameters fixed
    # from the unquantized weight so g_idx stays j // group_size, which every serving
    # format can store. damp 0.01 and block_size 128 are IST-DASLab's reference values.
    damp: float = 0.01
    act_order: bool = True
    block_size: int = 128
    static_groups: bool = True
    # Non-static groups only: "updated" takes a group's parameters from its columns with
    # every earlier column's error update applied (ours); "reference" from the values
    # IST-DASLab's code sees (updates of finished lazy blocks only).
    group_params: str = "updated"
    quantize_head: bool = False
    group_fallback: bool = True

    @classmethod
    def scheme(cls, name: str, **overrides) -> "QuantSpec":
        """A named scheme (W4A16, W4A16_ASYM, W3A16, W8A16, ...; `weight_schemes`), with any
        field overridden."""
        schemes = weight_schemes()
        key = name.upper()
        if key not in schemes:
            raise ValueError(f"unknown quantization scheme {name!r}; choose from "
                             f"{', '.join(sorted(schemes))}")
        return cls(**{**schemes[key], **overrides})

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an integer in 2..8, got {self.bits!r}")
        if not isinstance(self.group_size, int) or self.group_size < -1:
            raise ValueError(
                f"group_size must be -1 (per channel), 0 (per tensor) or a positive "
                f"divisor of in_features, got {self.group_size!r}"
            )
        if self.method not in QUANT_METHODS:
            raise ValueError(f"method must be one of {QUANT_METHODS}, got {self.method!r}")
        if not 0.0 <= self.damp < 1.0:
            raise ValueError(f"damp must be in [0, 1), got {self.damp}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be positive, got {self.block_size}")
        if self.group_params not in GROUP_PARAMS:
            raise ValueError(f"group_params must be one of {GROUP_PARAMS}, got "
                             f"{self.group_params!r}")
        for name in ("symmetric", "act_order", "static_groups", "quantize_head",
                     "group_fallback"):
            if not isinstance(getattr(self, name), bool):  # "false" would read as true
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def layer_group_size(self, name: str, in_features: int) -> int:
        """The group size a layer of `in_features` inputs is quantized with (see group_fallback);
        ValueError naming the layer when there is none."""
        g = self.group_size
        if g <= 0 or in_features % g == 0:
            return g
        if self.group_fallback:
            for fallback in FALLBACK_GROUP_SIZES:
                if fallback < g and in_features % fallback == 0:
                    return fallback
        smaller = [x for x in FALLBACK_GROUP_SIZES if x < g] if self.group_fallback else []
        raise ValueError(
            f"layer {name!r}: group_size {g} does not divide in_features {in_features}"
            + (f", nor does any of {smaller}" if smaller else "")
            + "; choose a group size that divides it, or -1 (one scale per output channel)")

    def for_layer(self, name: str, in_features: int) -> "QuantSpec":
        """This spec as a layer of `in_features` inputs gets it (its own group size)."""
        g = self.layer_group_size(name, in_features)
        return self if g == self.group_size else replace(self, group_size=g)

    def check_layer(self, name: str, in_features: int) -> None:
        """Raise ValueError if this spec cannot quantize a layer of `in_features` inputs."""
        self.layer_group_size(name, in_features)

    def groups(self, in_features: int) -> int:
        """Number of scale groups along the input dimension."""
        return in_features // self.group_size if self.group_size > 0 else 1

    def as_dict(self) -> dict:
        return asdict(self)


def group_fallback_note(quant: QuantSpec, layers) -> str | None:
    """One line saying which layers take another group size than `quant.group_size` (None if
    none do). layers: (name, in_features) pairs; a layer no group size fits raises ValueError."""
    moved: dict[int, list[str]] = {}
    in_features: dict[int, set[int]] = {}
    for name, n in layers:
        g = quant.layer_group_size(name, n)
        if g != quant.group_size:
            moved.setdefault(g, []).append(name)
            in_features.setdefault(g, set()).add(n)
    if not moved:
        return None
    parts = []
    for g, names in sorted(moved.items(), reverse=True):
        leaves = sorted({n.rsplit(".", 1)[-1].rsplit(" ", 1)[-1] for n in names})
        sizes = ", ".join(str(n) for n in sorted(in_features[g]))
        parts.append(f"{len(names)} layers ({', '.join(leaves)}; in_features {sizes}) use "
                     f"group size {g}")
    return (f"group size {quant.group_size} does not divide every layer's inputs: "
            + "; ".join(parts) + " (recorded per layer in the saved model)")


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
    # decayed linearly to 0 (normtweak.tweak.qparams).
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

    def __post_init__(self) -> None:
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite non-negative number, got {self.lr}")
        if not math.isfinite(self.scale):
            raise ValueError(f"scale must be finite, got {self.scale}")
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


@dataclass(frozen=True)
class GridSpec:
    """Grid of (lr, scale) points; selection on the validation split only."""

    lrs: tuple[float, ...] = (1e-5,)
    scales: tuple[float, ...] = (5.0,)
    save_all: bool = False
    points: tuple[tuple[float, float], ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.lrs or not self.scales:
            raise ValueError("grid search needs at least one lr and one scale")
        object.__setattr__(self, "lrs", tuple(float(x) for x in self.lrs))
        object.__setattr__(self, "scales", tuple(float(x) for x in self.scales))
        pts = tuple((lr, s) for lr in self.lrs for s in self.scales)
        object.__setattr__(self, "points", pts)
