"""Grid points over devices: device parsing, round-robin partition, sequential and spawned maps."""

import os

import pytest
import torch

from normtweak.tweak.parallel import map_jobs, partition, resolve_devices

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")


@needs_no_cuda
def test_resolve_devices_without_cuda():
    assert resolve_devices("auto") == ["cpu"] and resolve_devices(None) == ["cpu"]
    assert resolve_devices("cpu") == ["cpu"] and resolve_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="'cuda:0' does not exist: this machine has 0 CUDA"):
        resolve_devices("cuda:0")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_devices("cpu,tpu")
    with pytest.raises(ValueError, match="no devices"):
        resolve_devices(" , ")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resolve_devices_with_cuda():
    n = torch.cuda.device_count()
    assert resolve_devices("auto") == [f"cuda:{i}" for i in range(n)]
    assert resolve_devices("cuda") == ["cuda:0"]
    with pytest.raises(ValueError, match="listed twice"):
        resolve_devices("cuda:0,cuda:0")


def test_partition_is_round_robin_and_covers_every_job_once():
    assert partition(5, 2) == [[0, 2, 4], [1, 3]]
    assert partition(2, 3) == [[0], [1], []]
    for jobs in range(12):
        for devices in range(1, 5):
            parts = partition(jobs, devices)
            assert len(parts) == devices
            assert sorted(i for p in parts for i in p) == list(range(jobs))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    with pytest.raises(ValueError):
        partition(3, 0)


def _setup(shared, device):
    return {"offset": shared["offset"], "pid": os.getpid()}


def _job(shared, local, item, device):
    if item == "bad":
        raise ValueError("item 'bad' is not a number")
    return item * 2 + local["offset"], local["pid"], device


def test_sequential_map_runs_in_this_process_in_order():
    calls = []

    def setup(shared, device):
        calls.append(device)
        return _setup(shared, device)

    out = list(map_jobs(_job, {"offset": 1}, [3, 4, 5], ["cpu"], setup))
    assert [i for i, _ in out] == [0, 1, 2] and calls == ["cpu"]
    assert [r for _, (r, _, _) in out] == [7, 9, 11]
    assert {pid for _, (_, pid, _) in out} == {os.getpid()}
    given = list(map_jobs(_job, {"offset": 0}, [1], ["cpu"], setup, local={"offset": 10, "pid": 0}))
    assert given[0][1][0] == 12 and calls == ["cpu"]  # a given local skips setup


@pytest.mark.slow
def test_spawned_workers_one_per_device_and_errors_come_back():
    out = dict(map_jobs(_job, {"offset": 1}, [0, 1, 2, 3, 4], ["cpu", "cpu"], _setup, threads=1))
    assert sorted(out) == [0, 1, 2, 3, 4]
    assert [out[i][0] for i in range(5)] == [1, 3, 5, 7, 9]
    pids = {i: out[i][1] for i in out}
    assert os.getpid() not in pids.values() and len(set(pids.values())) == 2
    assert pids[0] == pids[2] == pids[4] and pids[1] == pids[3]  # round-robin, one worker each
    with pytest.raises(ValueError, match="'bad' is not a number"):
        list(map_jobs(_job, {"offset": 0}, [1, "bad"], ["cpu", "cpu"], _setup, threads=1))


TEXT = " ".join(f"The {w} model predicts the next token number {i}." for i, w in
                enumerate(["small", "tiny", "quantized", "float", "tweaked"] * 12))


@pytest.mark.slow
def test_grid_search_over_two_workers_matches_the_sequential_grid(make_tiny, tokenizer, tmp_path):
    from normtweak.config import GridSpec, QuantSpec, TweakSpec
    from normtweak.io import load_quantized
    from normtweak.testing import tiny_batch
    from normtweak.tweak.grid import grid_search

    torch.set_num_threads(1)  # the workers use one thread each: same float reduction order
    ids = torch.cat([tiny_batch(1, 32, seed=s) for s in range(3)])
    grid = GridSpec(lrs=(1e-3, 1e-2), scales=(0.0, 2.0), save_all=True)
    kw = {"validation_text": TEXT[:600], "test_text": TEXT[600:], "progress": False}
    quant = QuantSpec(bits=3, group_size=16)
    seq, seq_best = grid_search(make_tiny("llama"), tokenizer, ids, quant, TweakSpec(), grid,
                                save_dir=str(tmp_path / "seq"), **kw)
    par, par_best = grid_search(make_tiny("llama"), tokenizer, ids, quant, TweakSpec(), grid,
                                save_dir=str(tmp_path / "par"), devices="cpu,cpu", **kw)
    for a, b in zip(seq.points, par.points):
        assert (a.lr, a.scale) == (b.lr, b.scale)
        assert b.validation_ppl == pytest.approx(a.validation_ppl, rel=1e-6)
        assert b.test_ppl == pytest.approx(a.test_ppl, rel=1e-6)
        assert b.saved_to and os.path.isdir(b.saved_to)  # saved by the worker
    assert (par.best.lr, par.best.scale) == (seq.best.lr, seq.best.scale)
    x = tiny_batch(1, 16, seed=3)
    loaded, _ = load_quantized(tmp_path / "par" / "best")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, par_best(input_ids=x).logits)
        torch.testing.assert_close(par_best(input_ids=x).logits, seq_best(input_ids=x).logits,
                                   rtol=1e-5, atol=1e-5)
