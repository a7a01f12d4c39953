"""One calibration-cache convention, shared by `generate-data` and `run`.

A cached set lives in `<cache>/calibration/` (cache: `$NORMTWEAK_CACHE`, else
`~/.cache/normtweak`) under a name that says everything it is matched on:

    <model>_<method>_<N>x<T>_seed<S>_<vocab sha256, 12 hex>.safetensors

A lookup loads the file of that name and checks its metadata again (tokenizer hash,
seed, size), so a renamed or foreign file is never taken for the wanted set.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normtweak.calib.store import CalibrationSet, vocab_hash
from normtweak.outputs import user_cache_dir


def calibration_dir(folder: str | Path | None = None) -> Path:
    """`folder`, else the user cache's calibration folder."""
    return Path(folder).expanduser() if folder is not None else user_cache_dir() / "calibration"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", str(text).lower()).strip("-")


def cache_name(model: str, method: str, num_samples: int, seq_len: int, seed: int,
               tokenizer: Any) -> str:
    """smollm2-135m_selfgen_128x128_seed0_1a2b3c4d5e6f.safetensors"""
    model_slug = _slug(Path(str(model).rstrip("/")).name) or "model"
    return (f"{model_slug}_{_slug(method) or 'calib'}_{num_samples}x{seq_len}_seed{seed}_"
            f"{vocab_hash(tokenizer)[:12]}.safetensors")


def find_cached(folder: Path, name: str, tokenizer: Any, num_samples: int, seq_len: int,
                seed: int) -> CalibrationSet | None:
    """The cached set `folder/name` if it exists and its metadata matches, else None."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    try:
        calib = CalibrationSet.load(path)
        calib.check_tokenizer(tokenizer)
    except ValueError:
        return None
    same = (len(calib) == num_samples and calib.seq_len == seq_len
            and str(calib.metadata.get("seed")) == str(seed))
    return calib if same else None


@dataclass(frozen=True)
class CalibrationKey:
    """Which calibration set: what the cache names and matches it on (with the tokenizer).

    model: the model as the user named it (the file name's first part and the set's
    metadata). method: 'selfgen' (the model writes it) or 'text' (Wikipedia train windows).
    """

    model: str
    method: str
    num_samples: int
    seq_len: int
    seed: int


def calibration_ids(model, tokenizer, key: CalibrationKey, data_dir: str | None = None,
                    echo=print, device: str = "cpu"):
    """The cached set for (model, tokenizer, method, size, seed) when there is one, else make it.

    The cache is the one `normtweak generate-data` writes (`data_dir`, else the user cache's).
    """
    from normtweak.calib.generate import generate_calibration
    from normtweak.calib.text import calibration_from_text

    method, num_samples, seq_len, seed = key.method, key.num_samples, key.seq_len, key.seed
    folder = calibration_dir(data_dir)
    method_name = "selfgen" if method == "selfgen" else "text-wikipedia"
    name = cache_name(key.model, method_name, num_samples, seq_len, seed, tokenizer)
    cached = find_cached(folder, name, tokenizer, num_samples, seq_len, seed)
    if cached is not None:
        echo(f"calibration: reusing {folder / name}")
        return cached
    t0 = time.perf_counter()
    if method == "selfgen":
        echo(f"calibration: generating {num_samples} x {seq_len} tokens with the model ...")
        home = next(model.parameters()).device
        model.to(device)
        try:
            calib = generate_calibration(model, tokenizer, num_samples=num_samples,
                                         seq_len=seq_len, seed=seed)
            calib.metadata["model"] = key.model  # the name it was asked for, as generate-data
        finally:
            model.to(home)
    else:
        calib = calibration_from_text(tokenizer, "wikipedia", num_samples, seq_len, seed)
    path = calib.save(folder / name)
    echo(f"calibration: {method} {num_samples}x{seq_len} in {time.perf_counter() - t0:.0f} s -> {path}")
    return calib
