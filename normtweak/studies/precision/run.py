"""The precision study: train, quantize, evaluate; one JSON per run and a Markdown table."""

from __future__ import annotations

import json
import os
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from normtweak.studies.precision import precisions as P
from normtweak.studies.precision.classifier import (
    ClassifierConfig,
    RegexTokenizer,
    TextClassifier,
    count_parameters,
)
from normtweak.studies.precision.data import load_labeled


class PeakRSS:
    """Peak resident memory of this process while inside (sampled every 5 ms), in MiB."""

    def __enter__(self):
        self.start = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak(device: torch.device, rss: PeakRSS) -> dict:
    if device.type == "cuda":
        return {"peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20, "mem_kind": "cuda max allocated"}
    # RSS counts the interpreter, torch and earlier runs too; the growth is this run's own.
    return {"peak_mem_mib": rss.peak, "mem_added_mib": rss.peak - rss.start, "mem_kind": "peak RSS"}


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer (packed integer weights, scales and zeros included)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def calibration_windows(tokenizer, texts: list[str], num: int, length: int, seed: int) -> torch.Tensor:
    """[num, length] token ids cut at seeded offsets from the train texts joined (no padding)."""
    from normtweak.calib.text import random_windows

    stream = torch.tensor([t for text in texts for t in tokenizer.encode(text, 10_000)], dtype=torch.long)
    return random_windows(stream, num, length, seed)


def build(model_name: str, data, norm: str, max_len: int, seed: int):
    torch.manual_seed(seed)
    if model_name == "classifier":
        tok = RegexTokenizer.fit([t for t, _ in data.train])
        config = ClassifierConfig(vocab_size=len(tok), num_labels=len(data.labels), norm=norm, max_len=max_len)
        return TextClassifier(config), tok, None
    from normtweak.studies.precision.encoder import load_encoder

    model, tok, report = load_encoder(model_name, len(data.labels), norm)
    return model, tok, report


@dataclass(frozen=True)
class StudySpec:
    """What the precision study runs: which model, data and precisions, for which seeds, how
    the models train (lr None: 1e-3 for our classifier, 5e-5 for a pretrained encoder) and
    how the PTQ modes calibrate (calib_samples windows of calib_len tokens, tweak_lr)."""

    model: str = "classifier"
    data: str = "rotten_tomatoes"
    precisions: tuple[str, ...] = ("fp32",)
    seeds: tuple[int, ...] = (0,)
    train_size: int = 5000
    test_size: int = 1000
    epochs: int = 3
    batch_size: int = 32
    lr: float | None = None
    norm: str = "rms"
    max_len: int = 128
    calib_samples: int = 128
    calib_len: int = 64
    tweak_lr: float = 1e-4


def run_study(spec: StudySpec | None = None, device: str = "cpu",
              out_dir: str = "results/precision", echo=print) -> dict:
    """Every precision for every seed; returns {"runs": [...], "table": [...]}.

    PTQ precisions quantize a copy of the fp32 model trained for the same seed (trained
    once, shared), so their train_s is that model's training time.
    """
    spec = spec or StudySpec()
    model, data, precisions, norm = spec.model, spec.data, spec.precisions, spec.norm
    P.check_precisions(list(precisions))
    dev = torch.device(device)
    labeled = load_labeled(data, spec.train_size, spec.test_size)
    settings = {"epochs": spec.epochs, "batch_size": spec.batch_size, "max_len": spec.max_len,
                "norm": norm,
                "lr": spec.lr if spec.lr is not None else (1e-3 if model == "classifier" else 5e-5),
                "calib_samples": spec.calib_samples, "calib_len": spec.calib_len,
                "tweak_lr": spec.tweak_lr}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in spec.seeds:
        trained: dict = {}
        for precision in precisions:
            row = {"model": model, "data": data, "norm": norm, "precision": precision, "seed": seed,
                   "device": dev.type, "train_size": len(labeled.train), "test_size": len(labeled.test)}
            reason = P.unsupported(_base(precision), dev)
            if reason:
                row["skipped"] = reason
            else:
                row.update(_one_run(model, labeled, precision, seed, dev, trained, settings))
            runs.append(row)
            write_json(out / f"{model}_{data}_{norm}_{precision}_seed{seed}.json", row)
            echo(json.dumps(row))
    return {"settings": settings, "runs": runs, "table": summarize(runs)}


def _base(precision: str) -> str:
    """The training precision behind a mode (PTQ modes start from the fp32 model)."""
    return precision if precision in P.TRAIN_PRECISIONS else "fp32"


def _one_run(model: str, labeled, precision: str, seed: int, dev: torch.device, trained: dict,
             s: dict) -> dict:
    """Train (or reuse) the base model, quantize for PTQ modes, evaluate; the row's metrics."""
    base, row = _base(precision), {}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with PeakRSS() as rss:
        if base not in trained:
            net, tok, report = build(model, labeled, s["norm"], s["max_len"], seed)
            ids, mask = tok.batch([t for t, _ in labeled.train], s["max_len"])
            labels = torch.tensor([y for _, y in labeled.train])
            how = P.TrainSpec(s["epochs"], s["batch_size"], s["lr"])
            secs = P.train(net, ids, mask, labels, base, how, seed, dev)
            trained[base] = (net, tok, secs, report)
        net, tok, row["train_s"], report = trained[base]
        row["params"], row["norm_params"] = count_parameters(net)
        if P.is_post_training(precision):
            calib = calibration_windows(tok, [t for t, _ in labeled.train], s["calib_samples"],
                                        s["calib_len"], seed)
            net, row["quantize_s"] = P.post_training(net.cpu(), precision, calib, s["tweak_lr"])
        test_ids, test_mask = tok.batch([t for t, _ in labeled.test], s["max_len"])
        test_labels = torch.tensor([y for _, y in labeled.test])
        row["accuracy"], row["test_s"] = P.evaluate(net, test_ids, test_mask, test_labels, base, device=dev)
    row.update(_peak(dev, rss))
    row["model_mib"] = model_bytes(net) / 2**20
    if report is not None:
        row["norm_swap"] = str(report)
    return row


def write_json(path: Path, obj) -> None:
    from normtweak.common.files import write_atomic

    write_atomic(path, json.dumps(obj, indent=2))


def summarize(runs: list[dict]) -> list[dict]:
    """One row per precision: mean ± std over seeds of accuracy and times, memory max."""
    table = []
    for precision in dict.fromkeys(r["precision"] for r in runs):
        rs = [r for r in runs if r["precision"] == precision and "skipped" not in r]
        row = {"precision": precision, "seeds": len(rs)}
        if not rs:
            skipped = next(r["skipped"] for r in runs if r["precision"] == precision)
            table.append({**row, "accuracy": f"skipped: {skipped}"})
            continue
        for key in ("accuracy", "train_s", "test_s", "quantize_s"):
            vals = [r[key] for r in rs if key in r]
            if vals:
                row[key] = _mean_std(vals, 4 if key == "accuracy" else 1)
        for key in ("peak_mem_mib", "mem_added_mib"):
            if key in rs[0]:
                row[key] = f"{max(r[key] for r in rs):.0f}"
        row["model_mib"] = f"{rs[0]['model_mib']:.2f}"
        row["params"], row["norm_params"] = rs[0]["params"], rs[0]["norm_params"]
        table.append(row)
    return table


def _mean_std(vals: list[float], digits: int) -> str:
    """"mean ± std" over seeds; the mean alone for one seed (a std of one value means nothing)."""
    mean = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def markdown(report: dict, command: str) -> str:
    """The command, the table, and what its columns mean."""
    from normtweak.common.tables import markdown_table

    cols = ["precision", "seeds", "accuracy", "train_s", "test_s", "quantize_s", "peak_mem_mib",
            "mem_added_mib", "model_mib", "params", "norm_params"]
    runs = [r for r in report["runs"] if "skipped" not in r]
    mem = runs[0]["mem_kind"] if runs else "peak memory"
    notes = ("accuracy and times: mean ± std over seeds (the mean alone for one seed). PTQ rows (int8-toy, w8a8, w4-*) quantize a copy of "
             "the fp32 model of the same seed, so their train_s is its training time. "
             f"peak_mem_mib: {mem} during the run (max over seeds); on CPU it includes the interpreter, "
             "torch and what earlier runs of the process left allocated, and mem_added_mib is the growth "
             "of RSS during the run (PTQ rows reuse the trained model, so theirs is quantize + test). "
             "model_mib: bytes of parameters and buffers (packed codes, "
             "scales and zeros for W4). params / norm_params: of the float model.")
    return f"`{command}`\n\n" + markdown_table(report["table"], cols) + f"\n\n{notes}\n"
