"""One calibration-cache convention, shared by `generate-data` and `run`.

A cached set lives in `<cache>/calibration/` (cache: `$NORMTWEAK_CACHE`, else
`~/.cache/normtweak`) under a name that says everything it is matched on:

    <model>_<method>_<N>x<T>_seed<S>_<vocab sha256, 12 hex>.safetensors

A lookup loads the file of that name and checks its metadata again (tokenizer hash,
seed, size), so a renamed or foreign file is never taken for the wanted set.
"""

from __future__ import annotations

import re
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
