"""RunSpec (how a pass runs: device, seed, checkpoints, memory) and GridSpec (which (lr, scale)
points a grid search visits, chosen on which validation split)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from normtweak.config.tweak import check_lr, check_scale

SCALE_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class RunSpec:
    """How a pass runs, not what it computes: where, with which seed, checkpoints, memory.

    device: where each block goes for its turn ("cpu", "cuda", "cuda:1").
    seed: of every random choice inside the pass (the order of calibration batches).
    checkpoint_dir / resume / overwrite: write each finished block there; continue an
    interrupted run from it; or discard what is there and start over.
    activation_budget: calibration activations kept in memory ("8GiB"; None: all); the rest
    go to a memory-mapped file.
    kernel_norms: train through normtweak's Triton norm modules instead of the model's own
    (off: never benchmarked on a GPU here, so not shown to be faster).
    compile: the training steps' block forward (and its backward) through torch.compile, as
    AutoRound compiles its block (off: on this project's CPU it saved no CPU time in float32,
    benchmarks/block_cost.py; never measured on a GPU here).
    scale_dtype: the dtype the saved format stores scales in ("float16" for GPTQ and GGUF):
    each block's scales are rounded to it before tuning, so the norms compensate the
    weights that will be served.
    progress: progress bars (blocks; steps inside a block that trains for a few seconds).
    """

    device: str = "cpu"
    seed: int = 0
    checkpoint_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    activation_budget: str | float | None = None
    kernel_norms: bool = False
    compile: bool = False
    scale_dtype: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", str(self.device))
        if self.scale_dtype is not None and not isinstance(self.scale_dtype, str):  # torch.float16
            object.__setattr__(self, "scale_dtype", str(self.scale_dtype).removeprefix("torch."))
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", str(self.checkpoint_dir))
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume needs checkpoint_dir (the folder of the interrupted run)")
        if self.scale_dtype is not None and self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES} or None, got "
                             f"{self.scale_dtype!r}")
        if not isinstance(self.seed, int):
            raise TypeError(f"seed must be an integer, got {self.seed!r}")
        for name in ("resume", "overwrite", "kernel_norms", "compile", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GridSpec:
    """A grid search over (lr, scale): every point tweaks a fresh copy of the float model; the
    point with the lowest perplexity on the first `windows` windows of `text`'s validation
    split is chosen (its test split is reported, never used to choose)."""

    lrs: tuple[float, ...] = (1e-4,)
    scales: tuple[float, ...] = (5.0,)
    save_all: bool = False
    text: str = "wikipedia"
    windows: int | None = 16
    points: tuple[tuple[float, float], ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.lrs or not self.scales:
            raise ValueError("grid search needs at least one lr and one scale")
        object.__setattr__(self, "lrs", tuple(float(x) for x in self.lrs))
        object.__setattr__(self, "scales", tuple(float(x) for x in self.scales))
        for lr in self.lrs:
            check_lr(lr)
        for scale in self.scales:
            check_scale(scale)
        if self.windows is not None and (not isinstance(self.windows, int) or self.windows < 1):
            raise ValueError(f"windows must be a positive integer or None (all), got "
                             f"{self.windows!r}")
        if not str(self.text):
            raise ValueError("text must name a corpus (wikipedia, austen, a .txt/.jsonl path)")
        pts = tuple((lr, s) for lr in self.lrs for s in self.scales)
        object.__setattr__(self, "points", pts)
