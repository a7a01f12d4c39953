"""Calibration data from text: random windows of seq_len tokens of a corpus's train split.

The corpus is read with `normtweak.assets.load_text(name, split="train")` only, never
its validation or test split, so a set made here cannot leak into a perplexity
evaluated on those splits. The train text is tokenized as one stream (no special
tokens added) and windows start at seeded uniform offsets (with replacement, so two
windows may overlap, as in GPTQ's calibration).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from normtweak.calib.store import CalibrationSet, base_metadata


def is_corpus_name(text_or_name: str | os.PathLike) -> bool:
    """A Path, an existing file, or a string with no whitespace names a corpus; other strings are text."""
    if isinstance(text_or_name, os.PathLike):
        return True
    if len(text_or_name) < 4096 and "\n" not in text_or_name and Path(text_or_name).exists():
        return True
    return not any(c.isspace() for c in text_or_name)


def train_text(text_or_name: str | os.PathLike) -> tuple[str, str]:
    """(text, source): a corpus's train split via assets.load_text, or the text itself."""
    if is_corpus_name(text_or_name):
        from normtweak.assets import load_text

        return load_text(text_or_name, split="train"), str(text_or_name)
    return str(text_or_name), "text"


def token_stream(tokenizer: Any, text: str) -> torch.Tensor:
    """The text's token ids as one [n] int64 stream, no special tokens added."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.int64)


def random_windows(stream: torch.Tensor, num_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """`num_samples` windows [num_samples, seq_len] at seeded uniform offsets of `stream`."""
    if stream.numel() < seq_len:
        raise ValueError(f"the text has {stream.numel()} tokens, fewer than seq_len {seq_len}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - seq_len + 1, (num_samples,), generator=gen)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def calibration_from_text(
    tokenizer: Any,
    text_or_name: str | os.PathLike,
    num_samples: int = 128,
    seq_len: int = 2048,
    seed: int = 0,
    model_name: str | None = None,
) -> CalibrationSet:
    """Calibration windows from a corpus's train split ('wikipedia', 'austen', a .txt/.jsonl
    path) or from a given text (any string with whitespace, used whole)."""
    if num_samples < 1 or seq_len < 1:
        raise ValueError("num_samples and seq_len must be >= 1")
    text, source = train_text(text_or_name)
    ids = random_windows(token_stream(tokenizer, text), num_samples, seq_len, seed)
    meta = base_metadata(tokenizer, "text", seed, model_name)
    meta.update(corpus=source, split="train" if source != "text" else None)
    return CalibrationSet(ids, meta)
