"""torch.distributed (gloo, CPU, 2 processes): data-parallel runs equal single-process runs
with the same global batch; grid points spread over ranks equal the single-process grid.

One pair of processes does every distributed run (process start and imports cost more
than the runs); rank 0 saves what it got, the test process computes the single-process
references and compares.
"""

import math
import os
import socket

import pytest
import torch

from normtweak import dist

WORLD, LOCAL_BATCH, SAMPLES = 2, 2, 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ids():
    from normtweak.testing import tiny_batch

    return torch.cat([tiny_batch(1, 32, seed=s) for s in range(SAMPLES)])


def _model():
    from normtweak.arch import prepare_model
    from normtweak.testing import tiny_model

    return prepare_model(tiny_model("llama"))


def _tweak_spec(batch):
    from normtweak.config import TweakSpec

    return TweakSpec.preset("paper", lr=1e-2, scale=2.0, iters=2, batch_size=batch,
                            keep_better=True)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _runs(tmp, batch):
    """The runs compared: tweak (RTN, GPTQ), GPTQ quantize_model, a resume; same on both sides."""
    from normtweak.config import QuantSpec, RunSpec
    from normtweak.quant.model import quantize_model
    from normtweak.tweak.pipeline import tweak_model

    out = {}
    for method in ("rtn", "gptq"):
        model = _model()
        res = tweak_model(model, _ids(), QuantSpec(bits=3, group_size=16, method=method),
                          _tweak_spec(batch), RunSpec(checkpoint_dir=str(tmp / f"ckpt_{method}"),
                                                      progress=False, seed=3))
        out[method] = (_state(model), [(b.loss_before, b.loss_after) for b in res.blocks])
    model = _model()  # every block already checkpointed: rank 0 loads, the others are sent it
    tweak_model(model, _ids(), QuantSpec(bits=3, group_size=16, method="rtn"), _tweak_spec(batch),
                RunSpec(checkpoint_dir=str(tmp / "ckpt_rtn"), resume=True, progress=False, seed=3))
    out["resumed"] = _state(model)
    model = quantize_model(_model(), QuantSpec(bits=3, group_size=16, method="gptq"), _ids(),
                           RunSpec(progress=False), batch_size=batch)
    out["quantize_gptq"] = _state(model)
    return out


def _grid(tmp, tokenizer):
    from normtweak.config import GridSpec, QuantSpec, RunSpec
    from normtweak.testing import tiny_corpus
    from normtweak.tweak.grid import grid_search

    tmp.mkdir(parents=True, exist_ok=True)
    corpus = tiny_corpus(tmp / "corpus.txt")
    # lr 1e30: the activations overflow, a point that fails (recorded, the others go on)
    grid = GridSpec(lrs=(1e-3, 1e-2, 1e30), scales=(0.0, 2.0), text=str(corpus), windows=None)
    result, best = grid_search(_model(), tokenizer, _ids(), QuantSpec(bits=3, group_size=16),
                               _tweak_spec(1), grid, RunSpec(progress=False),
                               save_dir=str(tmp / "grid"))
    return result, (None if best is None else _state(best))


def _worker(rank, port, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from normtweak.testing import tiny_tokenizer

    assert dist.init_from_env() and dist.world_size() == WORLD and dist.rank() == rank
    out = {"shard": dist.shard_samples(torch.arange(SAMPLES).view(-1, 1), LOCAL_BATCH).view(-1)}
    gen = torch.Generator().manual_seed(rank)
    rows = 3 + 2 * rank
    x = torch.randn(rows, 5, generator=gen, dtype=torch.float64)
    mean, count = dist.weighted_mean(2 / rows * x.t() @ x, rows)
    out["hessian"], out["count"] = mean, count
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.full((3,), float(rank + 1))
    dist.average_gradients([p])
    out["grad"] = p.grad
    out["map"] = dist.map_over_ranks(lambda i, item: (item // item, rank, dist.world_size()),
                                     [1, 2, 3, 4, 5])
    try:  # job 2 (rank 0's) raises: every rank stops, none waits forever
        dist.map_over_ranks(lambda i, item: 1 // item, [1, 2, 0, 4, 5])
    except Exception as err:  # noqa: BLE001 (what each rank raised is the result)
        out["map_error"] = (type(err).__name__, str(err))
    out["runs"] = _runs(tmp / f"rank{rank}", LOCAL_BATCH)
    out["grid"] = _grid(tmp / f"grid{rank}", tiny_tokenizer())
    torch.save(out, tmp / f"out{rank}.pt")


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(free_port(), tmp), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"out{r}.pt", weights_only=False) for r in range(WORLD)], tmp


def test_helpers_are_no_ops_in_one_process():
    ids = torch.arange(10).view(5, 2)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    assert dist.shard_samples(ids, 3) is ids
    h = torch.ones(2, 2)
    mean, count = dist.weighted_mean(h, 7)
    assert mean is h and count == 7 and dist.mean_over_ranks(3.0, 2) == 1.5
    assert dist.on_main(lambda a: a + 1, 1) == 2 and dist.run_info() == {}
    assert dist.map_over_ranks(lambda i, x: 1 // x, [1, 2]) == [1, 0]
    with pytest.raises(ZeroDivisionError):  # a bug is never recorded as a result
        dist.map_over_ranks(lambda i, x: 1 // x, [1, 0])


def test_collectives_against_float64_references(distributed):
    outs, _ = distributed
    # chunks of 2 consecutive samples, chunk c to rank c mod 2
    assert outs[0]["shard"].tolist() == [0, 1, 4, 5] and outs[1]["shard"].tolist() == [2, 3, 6, 7]
    xs = [torch.randn(3 + 2 * r, 5, generator=torch.Generator().manual_seed(r),
                      dtype=torch.float64) for r in range(WORLD)]
    x = torch.cat(xs)
    for out in outs:  # H = 2/n X^T X over every rank's rows, on every rank
        torch.testing.assert_close(out["hessian"], 2 / x.shape[0] * x.t() @ x)
        assert out["count"] == x.shape[0]
        assert out["grad"].tolist() == [1.5, 1.5, 1.5]
        results = out["map"]  # job i on rank i mod 2, alone (world size 1)
        assert [r[:2] for r in results] == [(1, 0), (1, 1), (1, 0), (1, 1), (1, 0)]
        assert all(r[2] == 1 for r in results)
    assert outs[0]["map_error"][0] == "ZeroDivisionError"
    assert outs[1]["map_error"] == ("RuntimeError",
                                    "rank 0 failed: ZeroDivisionError('integer division or "
                                    "modulo by zero')")


def test_data_parallel_equals_one_process_with_the_global_batch(distributed, tmp_path):
    outs, _ = distributed
    torch.set_num_threads(1)
    ref = _runs(tmp_path, WORLD * LOCAL_BATCH)
    for out in outs:  # every rank holds the same model
        for key in ("rtn", "gptq"):
            assert all(torch.equal(out["runs"][key][0][k], outs[0]["runs"][key][0][k])
                       for k in ref[key][0])
    got = outs[0]["runs"]
    for key in ("rtn", "gptq", "quantize_gptq"):
        state, want = (got[key][0], ref[key][0]) if key != "quantize_gptq" else (got[key], ref[key])
        codes = [k for k in want if k.endswith("qweight")]
        assert codes
        if key == "rtn":
            assert all(torch.equal(state[k], want[k]) for k in codes)
        else:  # Hessian summed in another order: nearly every code equal
            equal = sum(int((state[k] == want[k]).sum()) for k in codes)
            total = sum(want[k].numel() for k in codes)
            assert equal / total >= 0.999, (key, equal / total)
        norms = [k for k in want if "norm" in k and ".layers." in k]
        assert norms
        for k in norms:
            torch.testing.assert_close(state[k], want[k], rtol=1e-4, atol=1e-5)
            if key != "quantize_gptq":
                assert not torch.equal(state[k], _model().state_dict()[k])  # really tweaked
    for (b0, a0), (b1, a1) in zip(got["rtn"][1], ref["rtn"][1]):  # losses over the global batch
        assert b0 == pytest.approx(b1, rel=1e-5) and a0 == pytest.approx(a1, rel=1e-4)
    assert all(torch.equal(got["resumed"][k], got["rtn"][0][k]) for k in got["rtn"][0])


def test_grid_over_ranks_equals_the_one_process_grid(distributed, tmp_path, tokenizer):
    outs, tmp = distributed
    torch.set_num_threads(1)
    ref, ref_best = _grid(tmp_path, tokenizer)
    (got, best), (other, other_best) = outs[0]["grid"], outs[1]["grid"]
    assert other_best is None and best is not None  # the best model is returned on rank 0
    assert got.float_ppl == pytest.approx(ref.float_ppl)
    assert got.quant_ppl == pytest.approx(ref.quant_ppl)
    for a, b, c in zip(got.points, ref.points, other.points):
        assert (a.lr, a.scale) == (b.lr, b.scale) and _seen(a) == _seen(c)  # all ranks agree
        if b.lr == 1e30:  # the diverged points are recorded, not fatal
            assert "NaN/Inf" in a.error and math.isnan(a.validation_ppl)
            continue
        assert a.error is None
        assert a.validation_ppl == pytest.approx(b.validation_ppl, rel=1e-6)
        assert a.test_ppl == pytest.approx(b.test_ppl, rel=1e-6)
    assert (got.best.lr, got.best.scale) == (ref.best.lr, ref.best.scale)
    for k in ref_best:
        torch.testing.assert_close(best[k], ref_best[k], rtol=1e-5, atol=1e-6)
    assert (tmp / "grid0" / "grid" / "best").is_dir() and not (tmp / "grid1" / "grid").exists()


def _seen(p):
    return repr((p.validation_ppl, p.test_ppl, p.seconds, p.error))


def test_devices_option_points_to_torchrun():
    from click.testing import CliRunner

    from normtweak.cli import main

    res = CliRunner().invoke(main, ["tweak", "--model", "x", "--save-dir", "y", "--devices", "2"])
    assert res.exit_code != 0 and "torchrun --nproc-per-node" in res.output
