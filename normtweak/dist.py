"""torch.distributed for normtweak: ranks, sharding and reductions; no-ops in one process.

Launch any command with torchrun, e.g.
    torchrun --nproc-per-node 8 -m normtweak tweak --device cuda ...
The CLI calls `init_from_env()` once: it joins the process group torchrun describes in
the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), with gloo for CPU tensors and
NCCL for CUDA tensors, and pins each rank to GPU LOCAL_RANK. Without that environment
(or inside `alone()`) every helper here answers as a single process would: rank 0 of 1,
nothing communicated, nothing changed.

Data-parallel block passes (tweak, quantize, run), W ranks, per-rank batch B:
- sharding: the calibration samples are cut into chunks of B consecutive samples and
  chunk c goes to rank c mod W (`shard_samples`), so step k's W local batches are,
  together, exactly global batch k = samples [k*W*B, (k+1)*W*B) of a single-process
  run with batch W*B. N must be a multiple of W*B (every rank takes the same number of
  optimizer steps).
- GPTQ: each rank accumulates its Hessian on its shard; `weighted_mean` all-reduces it
  weighted by row counts (exactly H = 2/n sum x x^T over all ranks' rows), so every rank
  holds the same Hessian and quantizes identically (no broadcast of codes, no idle
  ranks); `check_same` verifies after each block that the ranks agree.
- tweaking: `average_gradients` after each backward (the DistributedDataParallel rule):
  the losses are means over a batch, so the averaged gradient is the gradient of the
  mean over the global batch W*B, and all ranks keep identical norms and Adam states.
  The effective batch is W*B: the run equals a single-process run with --batch-size W*B.
- files and printing: rank 0 writes checkpoints and models (`on_main`,
  `main_rank_checkpoint`); the other ranks' stdout goes to /dev/null (stderr is kept).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch

from normtweak.common.errors import USER_ERRORS

_alone = 0  # depth of `alone()` contexts: > 0 means "act as a single process"


def _dist():
    import torch.distributed as d

    return d


def is_distributed() -> bool:
    """True inside an initialized process group of more than one rank (and not `alone()`)."""
    d = _dist()
    return (_alone == 0 and d.is_available() and d.is_initialized()
            and d.get_world_size() > 1)


def rank() -> int:
    return _dist().get_rank() if is_distributed() else 0


def world_size() -> int:
    return _dist().get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


@contextlib.contextmanager
def alone():
    """Within this block every helper acts as a single process (a grid point on one rank)."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


TIMEOUT_ENV = "NORMTWEAK_DIST_TIMEOUT"


def default_timeout_s(environ=os.environ) -> float:
    """Seconds a collective waits for a silent rank before the job fails: $NORMTWEAK_DIST_TIMEOUT,
    else 600 on CPUs (gloo) and 1800 with CUDA (a first NCCL call may wait on slow ranks)."""
    value = environ.get(TIMEOUT_ENV)
    if value is None or not value.strip():
        return 1800.0 if torch.cuda.is_available() else 600.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: give the process-group timeout as a "
                         f"positive number of seconds, e.g. {TIMEOUT_ENV}=600")
    return seconds


def init_from_env(timeout_s: float | None = None) -> bool:
    """Join the process group described by torchrun's environment; False when there is none.

    timeout_s: how long a collective waits for a stalled rank (default: default_timeout_s())."""
    d = _dist()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not d.is_available():
        return False
    if not d.is_initialized():
        if timeout_s is None:
            timeout_s = default_timeout_s()
        backend = "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "cpu:gloo,cuda:nccl"
        d.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        atexit.register(_shutdown)
    if d.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the process's lifetime)
    return True


def _shutdown() -> None:
    d = _dist()
    if d.is_initialized():
        d.destroy_process_group()


def _device_for(t: torch.Tensor | None = None) -> torch.device:
    """Where a collective's tensor must live: the tensor's device, else CPU (gloo)."""
    return t.device if t is not None else torch.device("cpu")


def shard_samples(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """This rank's samples [N / W, T]: chunks of `batch_size` samples, chunk c to rank c mod W."""
    w = world_size()
    if w == 1:
        return ids
    n = ids.shape[0]
    if n == 0 or n % (w * batch_size) != 0:
        raise ValueError(f"{n} calibration samples cannot be shared by {w} ranks in batches of "
                         f"{batch_size}: use a number of samples that is a multiple of "
                         f"world size x batch size = {w * batch_size}")
    chunks = torch.arange(n) // batch_size
    return ids[chunks % w == rank()]


def weighted_mean(mean: torch.Tensor, count: int) -> tuple[torch.Tensor, int]:
    """(sum_r count_r * mean_r / sum_r count_r, sum_r count_r) over the ranks; in place on mean."""
    if not is_distributed():
        return mean, count
    d = _dist()
    counts = torch.tensor([float(count)], dtype=torch.float64, device=mean.device)
    d.all_reduce(counts)
    total = int(counts.item())
    mean.mul_(count / max(total, 1))
    d.all_reduce(mean)
    return mean, total


def mean_over_ranks(total: float, count: int) -> float:
    """sum_r total_r / sum_r count_r (a mean over every rank's batches); local mean alone."""
    if not is_distributed():
        return total / max(count, 1)
    t = torch.tensor([total, float(count)], dtype=torch.float64)
    _dist().all_reduce(t)
    return float(t[0] / t[1].clamp_min(1))


def average_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the ranks (one all-reduce; missing grads count 0)."""
    if not is_distributed() or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    _dist().all_reduce(flat)
    flat.div_(world_size())
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(g.dtype)
        offset += n


def check_same(module: torch.nn.Module, what: str) -> None:
    """RuntimeError unless every rank holds the same state for `module` (checksums compared)."""
    if not is_distributed():
        return
    state = list(module.state_dict().values())
    device = _device_for(state[0] if state else None)
    sums = torch.stack([_checksum(t).to(device) for t in state]) if state else torch.zeros(1)
    lo, hi = sums.clone(), sums.clone()
    _dist().all_reduce(lo, op=_dist().ReduceOp.MIN)
    _dist().all_reduce(hi, op=_dist().ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError(f"{what} differs between ranks after processing: the ranks computed "
                           f"different results (mixed hardware or library versions?)")


def _checksum(t: torch.Tensor) -> torch.Tensor:
    x = t.detach().reshape(-1).double()
    weights = torch.arange(1, x.numel() + 1, dtype=torch.float64, device=x.device).remainder_(977)
    return torch.stack([x.sum(), (x * weights).sum()])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every rank (pickled)."""
    if not is_distributed():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers into `module` on every rank (same shapes)."""
    if not is_distributed():
        return
    for t in module.state_dict().values():
        _dist().broadcast(t, src=src)


_USER_ERRORS = {cls.__name__: cls for cls in USER_ERRORS}


def on_main(fn: Callable, *args, **kwargs) -> Any:
    """fn(*args, **kwargs) on rank 0 only; every rank returns its result or raises its error."""
    if not is_distributed():
        return fn(*args, **kwargs)
    result, error = None, None
    if is_main():
        try:
            result = fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (re-raised below, on every rank)
            error = err
    message = broadcast_object(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise _USER_ERRORS.get(message[0], RuntimeError)(f"rank 0: {message[1]}")
    return broadcast_object(result)


class _MainRankCheckpoint:
    """A CheckpointDir seen by every rank: rank 0 reads and writes it, the others are sent
    what it read (no shared file system needed)."""

    def __init__(self, ckpt) -> None:
        self.ckpt = ckpt

    def start(self, resume: bool, overwrite: bool = False) -> int:
        return on_main(self.ckpt.start, resume, overwrite)

    def save_block(self, index: int, block: torch.nn.Module) -> None:
        on_main(self.ckpt.save_block, index, block)

    def load_block(self, index: int, block: torch.nn.Module) -> None:
        on_main(self.ckpt.load_block, index, block)
        broadcast_module(block)

    def close(self) -> None:
        if is_main():
            self.ckpt.close()


def main_rank_checkpoint(ckpt):
    """`ckpt` itself in one process; under torchrun, the same API handled by rank 0."""
    return _MainRankCheckpoint(ckpt) if is_distributed() else ckpt


def run_info() -> dict:
    """What a checkpoint must record about the process group ({} in one process)."""
    return {"world_size": world_size()} if is_distributed() else {}


def map_over_ranks(fn: Callable[[int, Any], Any], items: Sequence[Any]) -> list[Any]:
    """[fn(i, items[i]) for every i] on every rank; rank r runs i = r, r + W, ... alone.

    Results must pickle. A job that raises stops the whole map: in one process the error
    propagates as it is; under torchrun every rank learns of it (after the others finish
    their jobs, so no rank waits forever) and raises, the failing rank its own error.
    """
    w, r = world_size(), rank()
    mine, error = {}, None
    for i in range(r, len(items), w):
        with alone():
            if w == 1:
                mine[i] = fn(i, items[i])
                continue
            try:
                mine[i] = fn(i, items[i])
            except Exception as err:  # noqa: BLE001 (re-raised below, once every rank knows)
                error = err
                break
    if w > 1:
        parts = [None] * w
        _dist().all_gather_object(parts, (mine, None if error is None else repr(error)))
        failed = [(rank_, msg) for rank_, (_, msg) in enumerate(parts) if msg is not None]
        if error is not None:
            raise error
        if failed:
            raise RuntimeError(f"rank {failed[0][0]} failed: {failed[0][1]}")
        for part, _ in parts:
            mine.update(part)
    return [mine[i] for i in range(len(items))]


def send_to_main(obj: Any, owner: int) -> Any:
    """`obj` of rank `owner` on rank 0; None on every other rank (the owner's copy is dropped)."""
    if not is_distributed():
        return obj
    if owner == 0:
        return obj if is_main() else None
    box = [obj]
    if rank() == owner:
        _dist().send_object_list(box, dst=0)
        return None
    if is_main():
        _dist().recv_object_list(box, src=owner)
        return box[0]
    return None
