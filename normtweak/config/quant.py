"""QuantSpec: how weights are quantized (W4A16 by default), the field's scheme names, and the
per-layer group-size fallback."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

QUANT_METHODS = ("rtn", "gptq")
GROUP_PARAMS = ("updated", "reference")
# Where a layer's in_features is not a multiple of the group size (SmolLM2's 576 = 4.5 x 128),
# the layer takes the largest of these below the group size that divides it (QuantSpec.for_layer).
FALLBACK_GROUP_SIZES = (128, 64, 32)
# Fields added to QuantSpec after specs were first saved, with the value every spec saved
# before them had (QuantSpec.from_record): a record without them means that value.
RECORDED_BEFORE = {"full_range": False}


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
    kernels and plain transformers load), on the full-range grid (`full_range`).
    `QuantSpec.scheme("W3A16")` names others.

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
    # GPTQ: quantize a block's linears in groups that share one input (q/k/v, o, gate/up,
    # down), each group's Hessian from the inputs it gets once the groups before it are
    # quantized (one more pass over the calibration set per group).
    true_sequential: bool = False
    # Also quantize the output head (RTN, whatever the method; a head tied to the input
    # embeddings is untied, the embeddings stay float).
    quantize_head: bool = False
    group_fallback: bool = True
    # Symmetric grids only. True (the default for symmetric schemes): the "full range" grid of
    # llama.cpp's Q4_0 and AutoRound's int_sym: the group's extreme of larger magnitude, m
    # (signed), lands exactly on the lowest code, scale = -m / 2**(b-1) (negative where the
    # positive side is larger), a step of max|w| / 2**(b-1). False: the grid IST-DASLab's GPTQ
    # and compressed-tensors define, scale = max|w| / ((2**b - 1) / 2) (the default before
    # normtweak 0.2's full-range switch). The stored format is the same (zero 2**(b-1)), and
    # every export format stores the negative scales as they are. None resolves to True for a
    # symmetric scheme and False for an asymmetric one (its zero point has no such choice).
    full_range: bool | None = None

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
        if self.full_range is None:
            object.__setattr__(self, "full_range", self.symmetric is True)
        for name in ("symmetric", "act_order", "static_groups", "true_sequential",
                     "quantize_head", "group_fallback", "full_range"):
            if not isinstance(getattr(self, name), bool):  # "false" would read as true
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.full_range and not self.symmetric:
            raise ValueError("full_range is a symmetric grid; an asymmetric scheme has a zero "
                             "point per group instead (leave full_range out or None, e.g. "
                             "dataclasses.replace(spec, symmetric=False, full_range=None), or "
                             "use symmetric=True)")

    @classmethod
    def from_record(cls, record: dict) -> "QuantSpec":
        """The spec a saved record (a provenance's or checkpoint's `as_dict`) describes. Fields
        the record lacks because an older normtweak wrote it take the value every spec had
        then (RECORDED_BEFORE), not today's default; keys that are not fields are ignored."""
        fields = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        return cls(**{**RECORDED_BEFORE, **fields})

    @property
    def grid(self) -> str:
        """The grid in words: 'symmetric, full range', 'symmetric, GPTQ grid' or 'asymmetric'."""
        if not self.symmetric:
            return "asymmetric"
        return "symmetric, full range" if self.full_range else "symmetric, GPTQ grid"

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


