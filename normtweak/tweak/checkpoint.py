"""Per-block checkpoints of a tweak run, written atomically, so a run can resume.

A checkpoint folder holds `run.json` (what the run is: specs, calibration hash, a
fingerprint of the float weights, number of blocks, and the sha256 of every block file
written) and `block_XXXX.safetensors` (the state of each finished block: packed weights,
scales, zeros, tweaked norms). The inputs of the next block are not stored: resuming
recomputes them by running the finished blocks, which is cheap next to tweaking and
deterministic.

A run holds `normtweak.lock` (its pid and host, under an flock) while it uses the folder,
so a second run on the same folder is refused naming the first; the lock of a run killed
on this host is taken over (and said so). A folder holding files normtweak did not write
is refused, as outputs are (normtweak.outputs).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import struct
import weakref
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from normtweak.common.files import atomic_file, write_atomic
from normtweak.common.lock import take_lock

RUN_NAME = "run.json"
WRITTEN_BY = "normtweak checkpoints"
_OWN_KEYS = ("written_by", "block_sha256")  # kept by the folder, not part of the run's identity
_OURS = re.compile(r"^(run\.json|normtweak\.lock|block_\d{4,}\.safetensors|"
                   r"\.(run\.json|block_\d{4,}\.safetensors)\..+)$")


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap checksum of every parameter and buffer of `model` that is not on the meta
    device: per tensor its name, dtype, shape, exact integer sums of its bits over 1M-element
    chunks and a strided sample of them (independent of threads and summation order)."""
    digest = hashlib.sha256()
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name in sorted(tensors):
        t = tensors[name].detach()
        if not t.is_meta:
            tensor_digest(digest, name, t)
    return digest.hexdigest()


def tensor_digest(digest, name: str, t: torch.Tensor) -> None:
    """Add one tensor to `digest` as weights_fingerprint counts it."""
    digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    flat = t.reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    bits = flat.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
                     [flat.element_size()])
    chunk = 1 << 20
    sums = [int(bits[i:i + chunk].sum(dtype=torch.int64)) for i in range(0, bits.numel(), chunk)]
    digest.update(struct.pack(f"<{len(sums)}q", *sums))
    sample = bits[:: max(1, bits.numel() // 4096)].to(torch.int64).cpu()
    digest.update(sample.numpy().tobytes())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None,
                     written=None) -> None:
    """safetensors save_file, atomically (normtweak.common.files); disk full says what is kept.

    written(tmp_path): called once the file is complete, before it is renamed into place."""
    try:
        with atomic_file(path) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                      metadata=metadata)
            if written is not None:
                written(tmp)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while writing {path}; earlier files are "
                          f"intact: free space, then run again (with --resume for checkpoints)") from err
        raise


def finished_blocks(folder: str | os.PathLike) -> list[int]:
    """Indices 0..k-1 of the leading blocks checkpointed in `folder` (empty if none)."""
    folder, done = Path(folder), 0
    while (folder / f"block_{done:04d}.safetensors").is_file():
        done += 1
    return list(range(done))


def describe_blocks(blocks: list[int]) -> str:
    """'checkpoints of blocks 0–7' (or 'no checkpoints')."""
    if not blocks:
        return "no checkpoints"
    if len(blocks) == 1:
        return f"a checkpoint of block {blocks[0]}"
    return f"checkpoints of blocks {blocks[0]}\u2013{blocks[-1]}"


# --- the folder --------------------------------------------------------------------------


class CheckpointDir:
    """The checkpoints of one tweak run. start() locks the folder until close() (or until
    this object is freed, or the process ends); use it as a context manager to be exact."""

    def __init__(self, folder: str | os.PathLike, run_info: dict) -> None:
        self.folder = Path(folder)
        self.run_info = run_info
        self.hashes: dict[str, str] = {}
        self._release = None

    @property
    def run_file(self) -> Path:
        return self.folder / RUN_NAME

    def block_file(self, index: int) -> Path:
        return self.folder / f"block_{index:04d}.safetensors"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder's lock (a no-op when not held)."""
        if self._release is not None:
            self._release()

    def start(self, resume: bool, overwrite: bool = False) -> int:
        """Check and lock the folder; return how many leading blocks are already done.

        With `resume`, the stored run description must match this run's (the model's weights
        included) and every finished block its recorded sha256, else ValueError says what
        differs. Without it, finished checkpoints are never dropped silently: ValueError
        names them unless `overwrite` (then our block files are removed). A folder holding
        files normtweak did not write is refused, and so is one another run holds.
        """
        self._check_ours()
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = take_lock(self.folder, "--checkpoint-dir")
        self._release = weakref.finalize(self, lock.release)
        try:
            return self._start(resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _start(self, resume: bool, overwrite: bool) -> int:
        for torn in [*self.folder.glob(".block_*"), *self.folder.glob(".run.json.*")]:
            torn.unlink(missing_ok=True)  # a write cut short by a crash (we hold the lock)
        found = finished_blocks(self.folder)
        stored = self._read_record()
        if resume and stored is not None:
            self._check_same_run(stored, found)
            self.hashes = dict(stored.get("block_sha256") or {})
            self._verify(found)
            return len(found)
        if found and not overwrite:
            raise ValueError(
                f"--checkpoint-dir {self.folder} already holds {describe_blocks(found)}; pass "
                f"--resume to continue that run, or --overwrite to discard them and start over"
            )
        for old in self.folder.glob("block_*.safetensors"):
            old.unlink()
        self.hashes = {}
        self._write_record()
        return 0

    def _read_record(self) -> dict | None:
        if not self.run_file.is_file():
            return None
        try:
            record = json.loads(self.run_file.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:
            raise ValueError(f"{self.run_file} cannot be read ({err}): it is damaged; delete "
                             f"the folder's checkpoints yourself, or use another "
                             f"--checkpoint-dir") from err
        return record if isinstance(record, dict) else {}  # {}: not ours (_check_ours)

    def _check_ours(self) -> None:
        """Refuse a folder holding anything normtweak's checkpoints do not write."""
        if not self.folder.exists():
            return
        if not self.folder.is_dir():
            raise ValueError(f"--checkpoint-dir {self.folder} is a file, not a folder")
        names = sorted(os.listdir(self.folder))
        foreign = [n for n in names if not _OURS.match(n)]
        blocks = [n for n in names if n.startswith("block_")]
        if not foreign and blocks and not self.run_file.is_file():
            foreign = blocks  # a run of ours writes run.json first
        if not foreign and self.run_file.is_file() and not _is_ours(self._read_record()):
            foreign = [RUN_NAME]
        if foreign:
            more = f", ... ({len(foreign)} files)" if len(foreign) > 6 else ""
            raise ValueError(
                f"--checkpoint-dir {self.folder} holds files normtweak did not write "
                f"({', '.join(foreign[:6])}{more}); checkpoints go into a new folder or one a "
                f"normtweak run made, so nothing of yours is replaced: choose another, such "
                f"as {self.folder / 'NAME'}")

    def _check_same_run(self, stored: dict, found: list[int]) -> None:
        keys = (set(stored) | set(self.run_info)) - set(_OWN_KEYS)
        diff = sorted(k for k in keys if stored.get(k) != self.run_info.get(k))
        if not diff:
            return
        what, others = [], [k for k in diff if k != "weights_fingerprint"]
        if "weights_fingerprint" in diff:
            what.append("the model's weights differ from the interrupted run's"
                        if "weights_fingerprint" in stored else "it holds no fingerprint of "
                        "the model's weights (an older normtweak made it) to check them by")
        if others:
            what.append(f"differs in {others}")
        raise ValueError(
            f"cannot resume from {self.folder}: its checkpoints ({describe_blocks(found)}) "
            f"were made by a different run ({'; '.join(what)}); use another --checkpoint-dir, "
            f"or --overwrite (without --resume) to discard them and start over")

    def _verify(self, found: list[int]) -> None:
        for index in found:
            path = self.block_file(index)
            recorded = self.hashes.get(path.name)
            if recorded is None:
                raise ValueError(
                    f"{path} has no sha256 in {self.run_file} (an older normtweak wrote it, or "
                    f"it was added by hand), so it cannot be checked; pass --overwrite "
                    f"(without --resume) to start over")
            if _sha256(path) != recorded:
                raise ValueError(
                    f"{path} does not match the sha256 recorded when it was written: it is "
                    f"truncated or was altered; delete it and the blocks after it to recompute "
                    f"them with --resume, or pass --overwrite (without --resume) to start over")

    def _write_record(self) -> None:
        record = {**self.run_info, "written_by": WRITTEN_BY, "block_sha256": self.hashes}
        write_atomic(self.run_file, json.dumps(record, indent=2, sort_keys=True))

    def save_block(self, index: int, block: torch.nn.Module) -> None:
        """Write block `index`; its sha256 reaches run.json before the file is in place."""
        path = self.block_file(index)

        def record(tmp: Path) -> None:
            self.hashes[path.name] = _sha256(tmp)
            self._write_record()

        try:
            atomic_save_file(block.state_dict(), path, {"block": str(index)}, written=record)
        except BaseException:
            self.close()  # the run ends here: let the next one in
            raise

    def load_block(self, index: int, block: torch.nn.Module) -> None:
        path = self.block_file(index)
        try:
            block.load_state_dict(load_file(path), strict=True)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(f"{path} cannot be restored ({str(err).splitlines()[0]}): it is "
                             f"damaged or from another model; pass --overwrite (without "
                             f"--resume) to start over") from err


def _is_ours(record: dict) -> bool:
    """run.json as a normtweak run wrote it (now, or before it was marked)."""
    if record.get("written_by") == WRITTEN_BY:
        return True
    return {"normtweak_version", "num_blocks", "calibration_sha256"} <= set(record)
