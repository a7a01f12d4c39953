"""CalibrationSet: token ids [num_samples, seq_len] in a .safetensors file with metadata.

On disk: one tensor "input_ids" (int32 when every id fits, else int64) and a string
metadata table whose values are JSON (so numbers, lists and dicts round-trip). The
metadata always holds FORMAT, FORMAT_VERSION, the tokenizer's name, vocabulary size and
vocabulary hash (sha256 of its sorted (token, id) items), method, seed, creation time
and normtweak version; generators add their own keys (languages, sampling, corpus, ...).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from normtweak.common.files import atomic_file

FORMAT = "normtweak-calibration"
FORMAT_VERSION = 1
_KEY = "input_ids"


def vocab_hash(tokenizer: Any) -> str:
    """sha256 (hex) of the tokenizer's vocabulary: its (token, id) items, sorted."""
    items = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


def calibration_hash(input_ids: torch.Tensor) -> str:
    """sha256 of the calibration token ids (int64, C order): what a saved model records."""
    data = input_ids.to(torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def tokenizer_name(tokenizer: Any) -> str:
    """A readable name for a tokenizer: its name_or_path, else its class name."""
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def tokenizer_metadata(tokenizer: Any) -> dict[str, Any]:
    """The metadata keys that tie a calibration set to its tokenizer."""
    return {
        "tokenizer": tokenizer_name(tokenizer),
        "vocab_size": len(tokenizer),
        "vocab_sha256": vocab_hash(tokenizer),
    }


def base_metadata(tokenizer: Any, method: str, seed: int, model: str | None) -> dict[str, Any]:
    """Metadata every calibration set carries; generators update it with their own keys."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        nt_version = version("normtweak")
    except PackageNotFoundError:  # running from a source tree that is not installed
        nt_version = "unknown"
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        **tokenizer_metadata(tokenizer),
        "method": method,
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "normtweak_version": nt_version,
    }


@dataclass
class CalibrationSet:
    """Calibration token ids with the metadata that says how they were made.

    input_ids: [num_samples, seq_len] int64 (held in memory as int64 whatever the file).
    """

    input_ids: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = self.input_ids
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.is_floating_point():
            raise ValueError("input_ids must be an integer tensor [num_samples, seq_len]")
        if ids.numel() and int(ids.min()) < 0:
            raise ValueError("input_ids holds negative token ids")
        self.input_ids = ids.detach().to("cpu", torch.int64).contiguous()
        self.metadata = dict(self.metadata)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Consecutive [<=batch_size, seq_len] int64 slices, in order; the last may be short."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self.input_ids[start : start + batch_size]

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise ValueError when `tokenizer` is not the one this set was made with."""
        mine = self.metadata.get("vocab_sha256")
        theirs = vocab_hash(tokenizer)
        if mine != theirs:
            raise ValueError(
                f"calibration set was made with tokenizer {self.metadata.get('tokenizer')!r} "
                f"(vocab {self.metadata.get('vocab_size')}, sha256 {str(mine)[:12]}), not with "
                f"{tokenizer_name(tokenizer)!r} (vocab {len(tokenizer)}, sha256 {theirs[:12]}); "
                "regenerate the set with this model's tokenizer"
            )

    def check_size(self, min_samples: int | None = None, min_seq_len: int | None = None) -> None:
        """Raise ValueError when the set is smaller than a caller needs."""
        if min_samples is not None and len(self) < min_samples:
            raise ValueError(f"calibration set has {len(self)} samples, {min_samples} needed")
        if min_seq_len is not None and self.seq_len < min_seq_len:
            raise ValueError(f"calibration set has seq_len {self.seq_len}, {min_seq_len} needed")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (normtweak.common.files); returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = self.input_ids
        if ids.numel() == 0 or int(ids.max()) < 2**31:
            ids = ids.to(torch.int32)
        meta = {key: json.dumps(value, ensure_ascii=False) for key, value in self.metadata.items()}
        with atomic_file(path) as tmp:
            save_file({_KEY: ids}, tmp, metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationSet:
        """Read a set written by `save`; FileNotFoundError / ValueError naming the path."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no calibration set at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw_meta = f.metadata() or {}
                keys = list(f.keys())
                ids = f.get_tensor(_KEY) if _KEY in keys else None
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err
        try:
            meta = {key: json.loads(value) for key, value in raw_meta.items()}
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: metadata is not valid JSON ({err})") from err
        if meta.get("format") != FORMAT or ids is None:
            raise ValueError(f"{path} is a safetensors file but not a normtweak calibration set")
        for key in ("format_version", "vocab_size"):
            value = meta.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{path}: metadata {key} is {value!r}, not a whole number: the "  # noqa: TRY004
                                 f"file is damaged; generate the calibration set again")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {meta['format_version']}; this normtweak reads "
                f"up to {FORMAT_VERSION}: upgrade normtweak"
            )
        try:
            calib = cls(ids, meta)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        vocab = meta.get("vocab_size")
        if vocab is not None and calib.input_ids.numel() and int(calib.input_ids.max()) >= vocab:
            raise ValueError(f"{path}: token id {int(calib.input_ids.max())} >= vocab size {vocab}")
        return calib


def load_calibration(
    path: str | os.PathLike,
    tokenizer: Any = None,
    min_samples: int | None = None,
    min_seq_len: int | None = None,
) -> CalibrationSet:
    """Load a calibration set; check its tokenizer (when given) and its size."""
    calib = CalibrationSet.load(path)
    try:
        if tokenizer is not None:
            calib.check_tokenizer(tokenizer)
        calib.check_size(min_samples, min_seq_len)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return calib
