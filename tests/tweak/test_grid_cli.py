"""`normtweak tweak` grid search through the CLI: a diverging point is recorded as failed and the
grid goes on; progress names each point; a previous grid's output is never overwritten unasked."""

import json

import pytest
from click.testing import CliRunner

from normtweak.cli import main
from normtweak.tweak import grid as grid_module
from normtweak.tweak.pipeline import NonFiniteActivationError


@pytest.fixture
def work(tiny_llama, corpus):
    return tiny_llama, corpus


def _args(work, out, *extra):
    model, corpus = work
    return ["tweak", "--model", str(model), "--from-text", str(corpus), "--num-samples", "2",
            "--seq-len", "32", "--nbits", "3", "--group-size", "16", "--validation-text",
            str(corpus), "--eval-windows", "1", "--save-dir", str(out),
            "--grid-search-lr", "0.001", "0.01", "--grid-search-scale", "0", *extra]


def test_a_diverging_point_is_recorded_and_the_grid_goes_on(work, tmp_path, monkeypatch):
    real = grid_module.tweak_model

    def diverge_at_lr_001(model, ids, quant, spec, *args, **kw):
        if spec.lr == 0.01 and spec.enabled:
            raise NonFiniteActivationError("NaN/Inf in the output of block 1 (calibration batch 0); stopping")
        return real(model, ids, quant, spec, *args, **kw)

    monkeypatch.setattr(grid_module, "tweak_model", diverge_at_lr_001)
    out = tmp_path / "grid"
    res = CliRunner().invoke(main, _args(work, out))
    assert res.exit_code == 0, res.output
    assert "grid point 1/2: lr 0.001, scale 0" in res.output
    assert "grid point 2/2: lr 0.01, scale 0" in res.output
    assert "plain quantization (baseline, no tweak)" in res.output
    assert "failed: NaN/Inf in the output of block 1" in res.output
    data = json.loads((out / "grid.json").read_text())
    failed = [p for p in data["points"] if p["error"]]
    assert [p["lr"] for p in failed] == [0.01] and data["best"]["lr"] == 0.001
    assert data["best"]["saved_to"] == str(out / "best") and (out / "best" / "config.json").is_file()
    # the JSON names its heatmap, a PNG beside it
    assert (out / data["heatmap"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_previous_grid_is_not_overwritten_unasked(work, tmp_path):
    out = tmp_path / "grid"
    args = _args(work, out)
    assert CliRunner().invoke(main, args).exit_code == 0
    before = (out / "best" / "model.safetensors").read_bytes()
    res = CliRunner().invoke(main, [*args, "--lr", "0.5"])
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert (out / "best" / "model.safetensors").read_bytes() == before
    res = CliRunner().invoke(main, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid"]  # no staging left behind
