"""Grid search: selection on validation only, shared work done once, outputs written."""

import json
import math

import pytest
import torch

from normtweak.config import GridSpec, QuantSpec, RunSpec, TweakSpec
from normtweak.testing import tiny_batch, tiny_corpus
from normtweak.tweak import grid as grid_module
from normtweak.tweak import pipeline
from normtweak.tweak.grid import GridPoint, grid_search, select_best, write_grid


def test_select_best_uses_validation_and_skips_nan():
    pts = [GridPoint(1e-5, 0, 10.0, 1.0, 0), GridPoint(1e-4, 0, 9.0, 50.0, 0),
           GridPoint(1e-3, 0, float("nan"), 0.5, 0)]
    assert select_best(pts).lr == 1e-4  # test perplexity never decides
    with pytest.raises(ValueError, match="diverged"):
        select_best([GridPoint(1, 0, math.nan, 1, 0)])


def test_grid_search_end_to_end(make_tiny, tokenizer, tmp_path, monkeypatch):
    model = make_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    real = pipeline.prepare_start
    monkeypatch.setattr(grid_module, "prepare_start", lambda *a, **k: calls.append(1) or real(*a, **k))
    ids = torch.cat([tiny_batch(1, 32, seed=s) for s in range(3)])
    corpus = tiny_corpus(tmp_path / "corpus.txt")
    grid = GridSpec(lrs=(1e-3, 1e-2), scales=(0.0, 2.0), text=str(corpus), windows=None)
    result, best_model = grid_search(model, tokenizer, ids, QuantSpec(bits=3, group_size=16),
                                     TweakSpec(), grid, RunSpec(progress=False),
                                     save_dir=str(tmp_path / "out"))
    assert calls == [1]  # block-0 inputs and float targets computed once for all points
    assert len(result.points) == 4
    assert result.best == min(result.points, key=lambda p: p.validation_ppl)
    for k, v in model.state_dict().items():  # the float model is untouched
        assert torch.equal(v, before[k]), k
    from normtweak.io import load_quantized

    loaded, _ = load_quantized(tmp_path / "out" / "best")
    x = tiny_batch(1, 16, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, best_model(input_ids=x).logits)
    json_path, png_path = write_grid(result, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["selected_on"] == "validation" and len(data["points"]) == 4
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same save_dir again: refused before any tweaking (prepare_start not called again)
    from normtweak.outputs import TargetExistsError

    with pytest.raises(TargetExistsError, match="best exists and is a normtweak output.*"
                                                "overwrite=True"):
        grid_search(model, tokenizer, ids, QuantSpec(bits=3, group_size=16), TweakSpec(), grid,
                    RunSpec(progress=False), save_dir=str(tmp_path / "out"))
    assert calls == [1]


def test_grid_spec_validates_its_points():
    """Every point is checked when the grid is made (a bad one no longer fails mid-search)."""
    with pytest.raises(ValueError, match="lr must be a finite"):
        GridSpec(lrs=(1e-3, math.inf))
    with pytest.raises(ValueError, match="scale must be a finite number >= -1"):
        GridSpec(scales=(5.0, -3.0))
    with pytest.raises(ValueError, match="windows"):
        GridSpec(windows=0)
    assert GridSpec().lrs == (TweakSpec().lr,)  # one default learning rate, not two


def test_a_bug_in_a_point_stops_the_search(make_tiny, tokenizer, tmp_path, monkeypatch):
    """Only a diverged point (NaN/Inf) is recorded as failed; any other error is a bug."""
    real = grid_module.tweak_model

    def buggy(model, ids, quant, spec, *args, **kwargs):
        if spec.lr == 1e-2:
            raise TypeError("a bug")
        return real(model, ids, quant, spec, *args, **kwargs)

    monkeypatch.setattr(grid_module, "tweak_model", buggy)
    ids = torch.cat([tiny_batch(1, 32, seed=s) for s in range(3)])
    grid = GridSpec(lrs=(1e-3, 1e-2), text=str(tiny_corpus(tmp_path / "c.txt")), windows=None)
    with pytest.raises(TypeError, match="a bug"):
        grid_search(make_tiny("llama"), tokenizer, ids, QuantSpec(bits=3, group_size=16),
                    TweakSpec(), grid, RunSpec(progress=False))
