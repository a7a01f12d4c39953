"""Grid search: selection on validation only, shared work done once, outputs written."""

import json
import math

import pytest
import torch

from normtweak.config import GridSpec, QuantSpec, TweakSpec
from normtweak.testing import tiny_batch
from normtweak.tweak import grid as grid_module
from normtweak.tweak import pipeline
from normtweak.tweak.grid import GridPoint, grid_search, select_best, write_grid

TEXT = " ".join(f"The {w} model predicts the next token number {i}." for i, w in
                enumerate(["small", "tiny", "quantized", "float", "tweaked"] * 12))


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
    grid = GridSpec(lrs=(1e-3, 1e-2), scales=(0.0, 2.0))
    result, best_model = grid_search(model, tokenizer, ids, QuantSpec(bits=3, group_size=16),
                                     TweakSpec(), grid, validation_text=TEXT[:600],
                                     test_text=TEXT[600:], save_dir=str(tmp_path / "out"),
                                     progress=False)
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
                    validation_text=TEXT[:600], test_text=TEXT[600:],
                    save_dir=str(tmp_path / "out"), progress=False)
    assert calls == [1]
