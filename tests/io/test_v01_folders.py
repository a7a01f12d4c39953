"""Folders saved by normtweak 0.1 load unchanged: tests/fixtures/v0_1 was written by the 0.1
code (commit 7ef6832, tests/fixtures/v0_1/make.py) with the logits 0.1's own load_quantized
gave; today's load_quantized must give the same, and keep the provenance 0.1 recorded."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import normtweak as nt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1"


@pytest.mark.parametrize("name", ["tweaked", "gptq_g32"])
def test_a_folder_saved_by_0_1_loads_to_the_same_logits(name):
    expected = load_file(str(FIXTURES / "logits.safetensors"))
    model, _ = nt.load_quantized(FIXTURES / name)
    with torch.no_grad():
        logits = model(expected["probe"]).logits
    torch.testing.assert_close(logits, expected[name], rtol=0, atol=1e-5)


def test_a_0_1_tweaked_folder_exports(tmp_path):
    """0.2's export read 0.1's provenance (its tweak record is a dict of 0.1's fields)."""
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM

    from normtweak.cli import main

    expected = load_file(str(FIXTURES / "logits.safetensors"))
    res = CliRunner().invoke(main, ["export", "--model", str(FIXTURES / "tweaked"), "--format",
                                    "float", "--save-dir", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "f")
    with torch.no_grad():
        logits = model(expected["probe"]).logits
    torch.testing.assert_close(logits, expected["tweaked"], rtol=0, atol=1e-4)
