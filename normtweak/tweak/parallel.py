"""Spread independent jobs (grid points) over devices: one worker process per device.

With one device (a CPU-only machine, or one GPU) the jobs run one after another in
this process. With D devices, D workers are spawned (torch.multiprocessing, "spawn":
CUDA cannot be forked); worker d runs jobs d, d + D, d + 2D, ... on its device, one at
a time, after a once-per-worker `setup` (the grid's shared start: block 0's inputs
and float targets). Results come back through a queue as they finish.

What it costs: the shared payload (the float model, calibration, texts) is pickled to
each worker once; torch moves CPU tensors into shared memory for that, so the float
weights are held once, but each worker tweaks its own deep copy of the model (one more
model in CPU RAM per device, shrinking as blocks are quantized) and holds its own
activations. Each worker pays a process start and imports (seconds) and its setup once.
Wall time for P points on D devices ~ ceil(P / D) points + that overhead.
"""

from __future__ import annotations

import queue as queue_module
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


def resolve_devices(spec: str | Sequence[str] | None) -> list[str]:
    """Device names from 'auto' (every CUDA device, else ['cpu']), 'cpu', 'cuda:0,cuda:1', a list.

    'cpu' may repeat ('cpu,cpu': two CPU workers, mostly useful for testing; torch already
    uses every core for one job). CUDA indices must exist.
    """
    if spec is None or spec == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    names = [n for n in names if n]
    if not names:
        raise ValueError("no devices given; use 'auto', 'cpu' or e.g. 'cuda:0,cuda:1'")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = []
    for name in names:
        if name == "cuda":
            name = "cuda:0"
        if name.startswith("cuda:"):
            index = name[5:]
            if not index.isdigit() or int(index) >= count:
                raise ValueError(f"device {name!r} does not exist: this machine has {count} CUDA "
                                 f"device(s); use --devices auto")
        elif name != "cpu":
            raise ValueError(f"unknown device {name!r}; use 'cpu', 'cuda:N' or 'auto'")
        out.append(name)
    cuda = [n for n in out if n != "cpu"]
    if len(set(cuda)) != len(cuda):
        raise ValueError(f"a CUDA device is listed twice in {names}: one worker per device")
    return out


def partition(num_jobs: int, num_devices: int) -> list[list[int]]:
    """Job indices per device, round-robin: device d gets d, d + D, d + 2D, ..."""
    if num_devices < 1:
        raise ValueError("need at least one device")
    return [list(range(d, num_jobs, num_devices)) for d in range(num_devices)]


Job = Callable[[Any, Any, Any, str], Any]  # fn(shared, local, item, device) -> result


def map_jobs(fn: Job, shared: Any, items: Sequence[Any], devices: Sequence[str],
             setup: Callable[[Any, str], Any] | None = None, local: Any = None,
             threads: int | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (index, fn(shared, local, items[index], device)) for every item, as they finish.

    One device: in this process, in order; `local` (or setup(shared, device)) is reused.
    Several: one spawned worker per device, each with local = setup(shared, device);
    fn, setup, shared, items and results must pickle. A failing job stops the map: its
    ValueError is raised again here, anything else as RuntimeError with the traceback.
    threads: torch threads per worker (default: this process's threads / workers).
    """
    if len(devices) <= 1:
        device = devices[0] if devices else "cpu"
        if local is None and setup is not None:
            local = setup(shared, device)
        for i, item in enumerate(items):
            yield i, fn(shared, local, item, device)
        return
    yield from _map_spawned(fn, shared, items, list(devices), setup, threads)


def _map_spawned(fn, shared, items, devices, setup, threads) -> Iterator[tuple[int, Any]]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results, finished = ctx.Queue(), ctx.Event()
    threads = threads or max(1, torch.get_num_threads() // len(devices))
    workers = []
    for rank, indices in enumerate(partition(len(items), len(devices))):
        if not indices:
            continue
        jobs = [(i, items[i]) for i in indices]
        p = ctx.Process(target=_worker, args=(fn, setup, shared, jobs, devices[rank], threads, results,
                                                     finished),
                        daemon=True)
        p.start()
        workers.append(p)
    try:
        for _ in range(len(items)):
            kind, index, payload = _next(results, workers)
            if kind == "error":
                name, message, trace = payload
                if name == "ValueError":
                    raise ValueError(message)
                raise RuntimeError(f"job {index} failed in a worker:\n{trace}")
            yield index, payload
    finally:
        finished.set()
        for p in workers:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
            p.join()


def _next(results, workers):
    """The next message; RuntimeError if every worker is gone without sending it."""
    while True:
        try:
            return results.get(timeout=2.0)
        except queue_module.Empty:
            dead = [p for p in workers if p.exitcode not in (None, 0)]
            if dead or all(p.exitcode is not None for p in workers):
                codes = [p.exitcode for p in workers]
                raise RuntimeError(f"a worker died before sending its results (exit codes {codes}; "
                                   f"killed for memory? try fewer devices or --activation-budget)")


def _worker(fn, setup, shared, jobs, device, threads, results, finished) -> None:
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    index = jobs[0][0] if jobs else -1
    try:
        local = setup(shared, device) if setup is not None else None
        for index, item in jobs:
            results.put(("ok", index, fn(shared, local, item, device)))
    except Exception as err:  # noqa: BLE001 (sent to the parent, which raises it)
        results.put(("error", index, (type(err).__name__, str(err), traceback.format_exc())))
    # Shared-memory tensors in the results are handed over through this process: stay
    # alive until the parent has received them all.
    finished.wait()
