"""One dialect: the same option names, aliases and defaults on every command that quantizes,
defaults read from QuantSpec/TweakSpec, lists space- or comma-separated, `python -m normtweak`,
the README's option table in step with the click definitions."""

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from normtweak.cli import COMMANDS, main, options_markdown
from normtweak.config import QuantSpec, TweakSpec

QUANTIZING = ("quantize", "tweak", "run")
README = Path(__file__).resolve().parents[1] / "README.md"


def _params(name):
    return {p.name: p for p in main.get_command(None, name).params}


def test_quantizing_commands_share_names_aliases_and_defaults():
    shared = ["method", "bits", "group_size", "symmetric", "act_order", "static_groups", "damp",
              "block_size", "true_sequential", "quantize_head", "device", "seed", "batch_size",
              "num_samples", "seq_len"]
    first = _params("quantize")
    for cmd in QUANTIZING:
        params = _params(cmd)
        for name in shared:
            assert name in params, f"{cmd} lacks --{name}"
            a, b = params[name], first[name]
            assert (a.opts, a.secondary_opts) == (b.opts, b.secondary_opts), (cmd, name)
            if (cmd, name) != ("run", "num_samples"):
                assert a.default == b.default, (cmd, name)
    assert {"--method", "--quantizer"} <= set(first["method"].opts)
    assert {"--bits", "--nbits"} <= set(first["bits"].opts)
    assert {"--group-size", "--group_size"} <= set(first["group_size"].opts)
    for cmd in ("tweak", "run"):
        params = _params(cmd)
        for name in ("lr", "scale", "iters", "loss", "target"):
            assert params[name].default == _params("tweak")[name].default
    # the main job's size was chosen on validation (benchmarks/main_job_size.py): 32 samples
    # keep it near 10 minutes on 2 cores; quantize and tweak keep the paper's 128
    assert _params("run")["num_samples"].default == 32
    assert _params("quantize")["num_samples"].default == _params("tweak")["num_samples"].default == 128
    # run scores 16 test windows; tweak 4 validation windows at its end; a grid 16 per point
    assert _params("run")["eval_windows"].default == 16
    assert _params("tweak")["eval_windows"].default == 4
    assert _params("grid")["windows"].default == 16


def test_defaults_come_from_the_dataclasses():
    from normtweak.config import RunSpec
    from normtweak.options import quant_spec

    params = _params("tweak")
    for field in ("method", "damp", "act_order", "block_size", "static_groups", "quantize_head",
                  "group_fallback", "true_sequential"):
        assert params[field].default == getattr(QuantSpec(), field), field
    # bits, group size and symmetry come from --scheme, whose default is QuantSpec()'s: W4A16
    assert params["scheme"].default == "W4A16"
    with click.Context(main.get_command(None, "tweak")):
        assert QuantSpec.scheme("W4A16") == QuantSpec() == quant_spec(
            {name: p.default for name, p in params.items()})
    assert params["seed"].default == RunSpec().seed and params["device"].default == RunSpec().device

    assert (QuantSpec().bits, QuantSpec().group_size, QuantSpec().symmetric) == (4, 128, True)
    assert QuantSpec().full_range is True  # --full-range left out: the scheme decides
    assert params["symmetric"].default is None and params["full_range"].default is None
    from normtweak.cli import options_markdown

    rows = {line.split(" | ")[0]: line for line in options_markdown().splitlines()}
    # an on/off pair the scheme decides shows no default (not its "off" spelling)
    assert " | - | " in rows["| `--symmetric` / `--asymmetric`"]
    assert " | - | " in rows["| `--full-range` / `--no-full-range`"]
    assert " | `--group-fallback` | " in rows["| `--group-fallback` / `--no-group-fallback`"]
    for field in ("lr", "scale", "iters", "loss", "target", "batch_size"):
        assert params[field].default == getattr(TweakSpec(), field), field


def test_default_quant_spec_fits_the_default_model():
    """SmolLM2: hidden 576 (= 4.5 x 128: those layers fall back to group 64), intermediate 1536."""
    spec = QuantSpec()
    assert spec.for_layer("linear", 576).group_size == 64
    assert spec.for_layer("linear", 1536) is spec


@pytest.mark.parametrize("value", [["0", "0.0001", "1e-05"], ["0,0.0001,1e-05"], ["0,", "0.0001", "1e-05"]])
def test_grid_lists_space_or_comma_separated(value):
    cmd = main.get_command(None, "tweak")
    ctx = cmd.make_context("tweak", ["--model", "m", "--save-dir", "o", "--grid-search-lr", *value,
                                     "--grid-search-scale", "1", "5", "--lr", "1e-3"])
    assert ctx.params["grid_search_lr"] == (0.0, 1e-4, 1e-5)
    assert ctx.params["grid_search_scale"] == (1.0, 5.0)
    assert ctx.params["lr"] == 1e-3


def test_negative_group_size_after_a_list_is_not_swallowed():
    cmd = main.get_command(None, "tweak")
    ctx = cmd.make_context("tweak", ["--model", "m", "--save-dir", "o", "--grid-search-scale", "1",
                                     "--group-size", "-1"])
    assert ctx.params["grid_search_scale"] == (1.0,) and ctx.params["group_size"] == -1


def test_python_dash_m_normtweak_is_the_command():
    proc = subprocess.run([sys.executable, "-m", "normtweak", "--help"], check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: normtweak" in proc.stdout
    for name in COMMANDS:
        assert name in proc.stdout


def test_options_page_matches_the_click_definitions():
    page = (README.parent / "docs" / "options.md").read_text(encoding="utf-8")
    assert options_markdown().strip() in page, "run: python scripts/options_page.py"


def test_option_table_lists_every_option_of_every_command():
    table = options_markdown()
    for name in COMMANDS:
        cmd = main.get_command(None, name)
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert f"`{p.opts[0]}" in table, (name, p.opts[0])


def test_help_works_for_every_command():
    for name in COMMANDS:
        res = CliRunner().invoke(main, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)


def test_a_preset_is_a_named_option_and_given_options_override_it():
    from normtweak import config, options

    if not hasattr(config, "TWEAK_PRESETS"):
        pytest.skip("config has no tweak presets on this branch")
    cmd = main.get_command(None, "tweak")
    ctx = cmd.make_context("tweak", ["--model", "m", "--save-dir", "o", "--preset", "paper",
                                     "--iters", "3", "--lr", "1e-5"])
    with ctx:
        spec = options.tweak_spec(ctx.params)
    # Algorithm 1: batch 1, the channel-wise distribution loss, targets from the quantized inputs
    assert (spec.batch_size, spec.loss, spec.target) == (1, "dist", "quantized_input")
    assert (spec.iters, spec.lr) == (3, 1e-5)
