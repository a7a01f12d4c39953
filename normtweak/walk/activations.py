"""Calibration activations in CPU memory, or in a memory-mapped file when over a budget.

The pipeline holds a few sets of activations at once (a block's inputs X_l, its float
targets Y_f, the next inputs X_{l+1}): each [num_samples, seq, hidden] in total, split
in batches. For a 70B model and 128 x 2048 tokens one set is 8.6 GB in float32, so
they cannot always stay in RAM. An `ActivationBudget` says how many bytes may stay in
memory, across every store it made; an `ActivationStore` is one set, a sequence of
batch tensors, each kept in memory (pinned when CUDA exists, for fast copies to the
GPU) while the budget allows, else appended to a temporary file and read back through
a memory map. Values read back are bit-identical to what was stored.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str | float | None) -> float:
    """Bytes from '8GiB', '512MB', '1.5G' (binary), '1000000'; None, 'inf', 'none' -> inf.

    KB/MB/GB/TB are powers of 1000; KiB/MiB/GiB/TiB and the bare K/M/G/T powers of 1024.
    """
    if text is None:
        return math.inf
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        if s in ("inf", "none", "unlimited"):
            return math.inf
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([a-z]*)", s)
        if not m or m.group(2) not in _UNITS:
            raise ValueError(f"cannot read a size from {text!r}; use e.g. 8GiB, 512MiB, 2GB or a "
                             f"number of bytes")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if value < 0 or math.isnan(value):
        raise ValueError(f"a size must be >= 0, got {text!r}")
    return value


def format_size(n: float) -> str:
    """'1.50 GiB' style, for messages and tables."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:.2f} {unit}"
    return f"{int(n)} B"


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class ActivationBudget:
    """How many bytes of activations may stay in CPU memory; the rest spill to disk.

    limit: bytes, or a size string ('8GiB'); None keeps everything in memory.
    folder: where spill files go (default: the system temp dir); removed when the
    stores that wrote them are gone. pin: pin in-memory tensors (default: when CUDA is
    available, so host-to-device copies are fast and asynchronous).
    """

    def __init__(self, limit: str | float | None = None, folder: str | os.PathLike | None = None,
                 pin: bool | None = None) -> None:
        self.limit = parse_size(limit)
        self.folder = Path(folder) if folder is not None else None
        self.pin = torch.cuda.is_available() if pin is None else pin
        self.in_memory = 0  # bytes currently held in memory by live stores
        self.peak_in_memory = 0
        self.spilled = 0  # bytes ever written to disk

    def store(self) -> ActivationStore:
        """A new, empty store drawing on this budget."""
        return ActivationStore(self)

    def reserve(self, n: int) -> bool:
        """Count n more bytes in memory if the limit allows; say whether it did."""
        if self.in_memory + n > self.limit:
            return False
        self.in_memory += n
        self.peak_in_memory = max(self.peak_in_memory, self.in_memory)
        return True

    def release(self, n: int) -> None:
        self.in_memory -= n

    def __repr__(self) -> str:
        limit = "unlimited" if math.isinf(self.limit) else format_size(self.limit)
        return (f"ActivationBudget(limit={limit}, in_memory={format_size(self.in_memory)}, "
                f"spilled={format_size(self.spilled)})")


def as_budget(value) -> ActivationBudget:
    """An ActivationBudget from a budget, a size ('8GiB', bytes) or None (unlimited)."""
    return value if isinstance(value, ActivationBudget) else ActivationBudget(value)


class _Spill:
    """The resources of one store: memory bytes counted against the budget, a spill file."""

    def __init__(self, budget: ActivationBudget) -> None:
        self.budget = budget
        self.mem_bytes = 0
        self.folder: str | None = None
        self.file = None
        self.size = 0

    def write(self, t: torch.Tensor) -> int:
        if self.file is None:
            base = self.budget.folder
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            self.folder = tempfile.mkdtemp(prefix="normtweak-activations-", dir=base)
            self.file = open(os.path.join(self.folder, "activations.bin"), "w+b")  # noqa: SIM115 (kept open)
        offset = self.size
        raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        try:
            self.file.write(memoryview(raw))
            self.file.flush()  # readers map the file, not this buffered handle
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            raise OSError(errno.ENOSPC, f"disk full while writing activations to {self.folder}: "
                          f"free space, point TMPDIR elsewhere or raise --activation-budget") from err
        self.size += raw.nbytes
        self.budget.spilled += raw.nbytes
        return offset

    def path(self) -> str:
        return os.path.join(self.folder, "activations.bin")

    def close(self) -> None:
        self.budget.release(self.mem_bytes)
        self.mem_bytes = 0
        if self.file is not None:
            self.file.close()
            self.file = None
            shutil.rmtree(self.folder, ignore_errors=True)


class ActivationStore(Sequence):
    """One set of activations: a sequence of batch tensors, in memory or on disk.

    store.append(t) keeps a CPU copy of t (a copy only where needed: a CPU tensor is
    kept as is, so callers must not modify it in place afterwards); store[i] gives it
    back, read from the memory map when it was spilled.
    """

    def __init__(self, budget: ActivationBudget) -> None:
        self._items: list = []  # a tensor, or (offset, shape, dtype) in the spill file
        self._spill = _Spill(budget)
        self._finalizer = weakref.finalize(self, _Spill.close, self._spill)

    def append(self, t: torch.Tensor) -> None:
        n = nbytes(t)
        budget = self._spill.budget
        if budget.reserve(n):
            self._spill.mem_bytes += n
            if budget.pin and torch.cuda.is_available():  # one copy, straight into pinned memory
                t = torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t.detach())
            else:
                t = t.detach().to("cpu")
            self._items.append(t)
        else:
            self._items.append((self._spill.write(t), tuple(t.shape), t.dtype))

    def extend(self, tensors) -> None:
        for t in tensors:
            self.append(t)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        item = self._items[index]
        if isinstance(item, torch.Tensor):
            return item
        offset, shape, dtype = item
        count = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        mapped = np.memmap(self._spill.path(), dtype=np.uint8, mode="r", offset=offset, shape=(count,))
        return torch.from_numpy(np.array(mapped)).view(dtype).reshape(shape)

    @property
    def on_disk(self) -> int:
        """How many batches were spilled to the file."""
        return sum(not isinstance(i, torch.Tensor) for i in self._items)

    def close(self) -> None:
        """Free the memory count and delete the spill file now (else when collected)."""
        self._items = []
        self._finalizer()
