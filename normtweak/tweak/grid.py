"""Grid search over (lr, scale): select on the validation split, report every point on test.

Work that is the same for every point is done once: block 0's captured inputs and
float targets (`normtweak.walk.prepare_start`), and the float and plain-quantized
baselines. Each point tweaks a fresh copy of the float model. Under torchrun the
baselines and points are spread over the ranks (normtweak.dist.map_over_ranks: rank r
runs jobs r, r + W, ..., each alone on its device, making the shared start once); every
rank gets every result, rank 0 saves the best model (sent to it by the rank that made
it). A point whose activations diverge (NaN/Inf) is recorded (`error`, NaN perplexities)
and the others go on; any other error is a bug and stops the search, on every rank. With
grid.save_all each rank saves its own points (several nodes need a shared folder).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from torch import nn

from normtweak import dist
from normtweak.common.files import atomic_file, write_atomic
from normtweak.config import GridSpec, QuantSpec, RunSpec, TweakSpec
from normtweak.tweak.pipeline import tweak_model
from normtweak.walk import NonFiniteActivationError, as_input_ids, prepare_start


@dataclass
class GridPoint:
    lr: float
    scale: float
    validation_ppl: float
    test_ppl: float
    seconds: float
    saved_to: str | None = None
    error: str | None = None  # why the point failed (its perplexities are then NaN)


@dataclass
class GridResult:
    float_ppl: dict
    quant_ppl: dict  # plain quantization, no tweak
    points: list[GridPoint] = field(default_factory=list)
    best: GridPoint | None = None

    def as_dict(self) -> dict:
        return {
            "float": self.float_ppl,
            "quantized": self.quant_ppl,
            "points": [asdict(p) for p in self.points],
            "best": asdict(self.best) if self.best else None,
            "selected_on": "validation",
        }


@dataclass
class _PointJob:
    """What every grid point needs."""

    model: nn.Module
    tokenizer: object
    ids: object
    quant: QuantSpec
    tweak: TweakSpec
    grid: GridSpec
    run: RunSpec
    save_all_dir: str | None


def _evaluate(job: _PointJob, model, label: str) -> tuple[float, float]:
    from normtweak.evaluate import split_perplexity

    windows = f"{job.grid.windows} windows" if job.grid.windows else "all windows"
    print(f"{label}: perplexity on the validation and test splits ({windows} each) ...",
          flush=True)
    return tuple(split_perplexity(model, job.tokenizer, job.grid.text, split,
                                  max_windows=job.grid.windows, device=job.run.device).ppl
                 for split in ("validation", "test"))


def _run_point(job: _PointJob, start, point: tuple):
    """Tweak a copy of the float model at (lr, scale), score it: (GridPoint, model on the CPU).

    Only a diverged point (NaN/Inf activations) fails; any other error is a bug and stops
    the search."""
    from normtweak.calib.store import calibration_hash
    from normtweak.io import save_quantized

    lr, scale, number, total = point
    print(f"grid point {number}/{total}: lr {lr:g}, scale {scale:g}", flush=True)
    spec = replace(job.tweak, lr=lr, scale=scale)
    candidate = copy.deepcopy(job.model)
    try:
        run = tweak_model(candidate, job.ids, job.quant, spec, job.run, start=start)
    except NonFiniteActivationError as err:  # this point diverged; the others go on
        print(f"grid point {number}/{total} failed: {err}", flush=True)
        return GridPoint(lr, scale, math.nan, math.nan, 0.0, error=str(err).split(";")[0]), None
    v, t = _evaluate(job, candidate, f"grid point {number}/{total}")
    result = GridPoint(lr, scale, v, t, run.seconds)
    if job.save_all_dir is not None:
        path = Path(job.save_all_dir) / point_folder(lr, scale)
        save_quantized(candidate, job.tokenizer, path, quant=job.quant, tweak=spec,
                       calibration_sha256=calibration_hash(job.ids), overwrite=job.run.overwrite)
        result.saved_to = str(path)
    return result, candidate.to("cpu")


def point_folder(lr: float, scale: float) -> str:
    """The folder under save_dir that grid point (lr, scale) is saved to (GridSpec.save_all)."""
    return f"lr{lr:g}_scale{scale:g}"


def select_best(points: list[GridPoint]) -> GridPoint:
    """The point with the lowest validation perplexity (NaN points never win)."""
    finite = [p for p in points if math.isfinite(p.validation_ppl)]
    if not finite:
        raise ValueError("every grid point diverged (validation perplexity is not finite)")
    return min(finite, key=lambda p: p.validation_ppl)


def grid_search(model: nn.Module, tokenizer, calibration, quant: QuantSpec, tweak: TweakSpec,
                grid: GridSpec, run: RunSpec = RunSpec(), save_dir: str | None = None):
    """Run the pipeline for every (lr, scale) of `grid`; return (GridResult, best model).

    The float `model` is left unchanged. Points are chosen on `grid.text`'s validation split
    (each document scored from its own BOS, the first grid.windows windows); the test split
    is reported. The best model (and every model when grid.save_all) is saved under
    save_dir; run.overwrite replaces models an earlier run saved there (save_quantized's
    rule), else an existing one is refused here, before any tweaking. Under torchrun the
    jobs are spread over the ranks; the best model is returned on rank 0 (None elsewhere).
    """
    from normtweak.calib.store import calibration_hash
    from normtweak.io import save_quantized
    from normtweak.outputs import check_target

    if save_dir is not None:
        names = ["best"] + ([point_folder(lr, s) for lr, s in grid.points] if grid.save_all else [])
        for name in names:
            check_target(Path(save_dir) / name, run.overwrite, "path", "overwrite=True")
    ids = as_input_ids(calibration)
    if tweak.num_samples is not None:
        ids = ids[: tweak.num_samples]
    point_run = replace(run, progress=run.progress and not dist.is_distributed())
    job = _PointJob(model, tokenizer, ids, quant, tweak, grid, point_run,
                    save_dir if save_dir is not None and grid.save_all else None)
    numbered = [(lr, s, i + 1, len(grid.points)) for i, (lr, s) in enumerate(grid.points)]
    items = ["float", "quantized"] + numbered
    local: dict = {"start": None, "key": None, "model": None}  # this rank's start and best
    results = dist.map_over_ranks(lambda i, item: _run_job(job, local, i, item), items)
    (fv, ft), (qv, qt) = results[0], results[1]
    result = GridResult({"validation": fv, "test": ft}, {"validation": qv, "test": qt})
    result.points = list(results[2:])
    result.best = select_best(result.points)
    owner = (len(items) - len(grid.points) + result.points.index(result.best)) % dist.world_size()
    best_model = dist.send_to_main(local["model"] if dist.rank() == owner else None, owner)
    if save_dir is not None:
        best_spec = replace(tweak, lr=result.best.lr, scale=result.best.scale)
        path = Path(save_dir) / "best"
        dist.on_main(save_quantized, best_model, tokenizer, path, quant=quant, tweak=best_spec,
                     calibration_sha256=calibration_hash(ids), extra={"grid": result.as_dict()},
                     overwrite=run.overwrite)
        result.best.saved_to = str(path)
    return result, best_model


def _run_job(job: _PointJob, local: dict, index: int, item):
    """One job of the grid on this rank: a baseline's (validation, test) or a GridPoint."""
    if item == "float":
        return _evaluate(job, job.model, "float model")
    if local["start"] is None:
        local["start"] = prepare_start(job.model, job.ids, job.tweak.batch_size, job.run)
    if item == "quantized":
        plain = copy.deepcopy(job.model)
        tweak_model(plain, job.ids, job.quant, replace(job.tweak, loss="none"), job.run,
                    start=local["start"])
        return _evaluate(job, plain, "plain quantization (baseline, no tweak)")
    point, candidate = _run_point(job, local["start"], item)
    key = (point.validation_ppl, index)  # ties go to the earlier point
    if math.isfinite(point.validation_ppl) and (local["key"] is None or key < local["key"]):
        local["key"], local["model"] = key, candidate
    return point


def write_grid(result: GridResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write grid.json and a heatmap grid.png (validation and test perplexity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "grid.json"
    write_atomic(json_path, json.dumps({**result.as_dict(), "heatmap": "grid.png"}, indent=2))
    lrs = sorted({p.lr for p in result.points})
    scales = sorted({p.scale for p in result.points})
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(lrs) * 2, 1.5 + 0.8 * len(scales)))
    for ax, key, title in zip(axes, ("validation_ppl", "test_ppl"), ("validation", "test")):
        grid = [[next((getattr(p, key) for p in result.points if p.lr == lr and p.scale == s),
                      float("nan")) for lr in lrs] for s in scales]
        im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
        ax.set_xticks(range(len(lrs)), [f"{x:g}" for x in lrs])
        ax.set_yticks(range(len(scales)), [f"{x:g}" for x in scales])
        ax.set_xlabel("lr")
        ax.set_ylabel("scale")
        ax.set_title(f"{title} perplexity (quantized: {result.quant_ppl[title]:.2f})")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    png_path = out / "grid.png"
    try:
        with atomic_file(png_path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return json_path, png_path


def summary_lines(result: GridResult, target: Path) -> list[str]:
    """What `normtweak tweak` prints after a grid search: baselines, one line per point
    (gap recovered on test), where the best model and the grid files went."""
    from normtweak.evaluate.report import gap_recovered

    lines = [f"float: validation {result.float_ppl['validation']:.3f}  test {result.float_ppl['test']:.3f}",
             (f"plain quantization (baseline, no tweak): validation "
              f"{result.quant_ppl['validation']:.3f}  test {result.quant_ppl['test']:.3f}"),
             f"{'lr':>10} {'scale':>6} {'val ppl':>9} {'test ppl':>9} {'gap rec. %':>10}"]
    for p in result.points:
        gap = gap_recovered(result.float_ppl["test"], result.quant_ppl["test"], p.test_ppl)
        mark = "  <- best (validation)" if p is result.best else ""
        failed = f"  failed: {p.error}" if getattr(p, "error", None) else ""
        lines.append(f"{p.lr:>10g} {p.scale:>6g} {p.validation_ppl:>9.3f} {p.test_ppl:>9.3f} "
                     f"{gap:>10.1f}{mark}{failed}")
    lines.append(f"saved the best model to {result.best.saved_to}; grid: {target / 'grid.json'}, "
                 f"{target / 'grid.png'}")
    return lines
