"""Configuration as data: frozen dataclasses, validated once at construction.

`QuantSpec` says how weights are quantized, `TweakSpec` how each block is tuned, `RunSpec`
how a pass runs (device, seed, checkpoints, memory), `GridSpec` which (lr, scale) points a
grid search visits. Public entry points take (model, calibration, quant, tweak, run).
"""

from normtweak.config.quant import (
    FALLBACK_GROUP_SIZES,
    GROUP_PARAMS,
    QUANT_METHODS,
    QuantSpec,
    group_fallback_note,
    weight_schemes,
)
from normtweak.config.run import SCALE_DTYPES, GridSpec, RunSpec
from normtweak.config.tweak import (
    DEFAULT_JOINT_SEQ_LEN,
    DEFAULT_SEQ_LEN,
    QUANT_PARAMS,
    TRAIN_DTYPES,
    TWEAK_LOSSES,
    TWEAK_PRESETS,
    TWEAK_TARGETS,
    TweakSpec,
    check_lr,
    check_scale,
    default_seq_len,
)

__all__ = ["DEFAULT_JOINT_SEQ_LEN", "DEFAULT_SEQ_LEN", "FALLBACK_GROUP_SIZES", "GROUP_PARAMS",
           "QUANT_METHODS", "QUANT_PARAMS", "SCALE_DTYPES", "TRAIN_DTYPES", "TWEAK_LOSSES", "TWEAK_PRESETS",
           "TWEAK_TARGETS", "GridSpec", "QuantSpec", "RunSpec", "TweakSpec", "check_lr",
           "check_scale", "default_seq_len", "group_fallback_note", "weight_schemes"]
