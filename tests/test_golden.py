"""Golden outputs (scripts/golden.py): a redesign may not change what quantizing and tweaking
produce. Recorded before the one-block-walker refactor; bit-identical on the recording
environment (torch version and CPU capability), perplexities to 1e-3 elsewhere."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import golden  # noqa: E402


def _check(*flags):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "golden.py"), "check", *flags],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tiny_models_reproduce_their_golden_outputs():
    _check()


@pytest.mark.slow
def test_two_smollm2_blocks_reproduce_their_golden_outputs():
    _check("--smollm2")


def test_compare_names_every_kind_of_difference():
    g = {"a": {"tensors": {"w": "1", "b": "2"}, "ppl": "3.0"}, "b": {"ppl": "1.0"}}
    f = {"a": {"tensors": {"w": "1", "b": "9"}, "ppl": "3.0001"}, "c": {"ppl": "1.0"}}
    lines = golden.compare(g, f)
    assert any("1 tensors differ" in x and "'b'" in x for x in lines)
    assert any("ppl 3.0 != 3.0001" in x for x in lines)
    assert any("b: missing" in x for x in lines) and any("c: new" in x for x in lines)
    loose = golden.compare({"a": g["a"]}, {"a": f["a"]}, exact=False)
    assert loose == []  # tensors skipped, 3.0 vs 3.0001 within 1e-3
    far = golden.compare({"a": g["a"]}, {"a": {**f["a"], "ppl": "3.1"}}, exact=False)
    assert far and "beyond 1e-3" in far[0]


def test_the_recorded_file_holds_every_case():
    recorded = json.loads((ROOT / "tests" / "golden" / "tiny.json").read_text())
    assert {name for name, _, _ in golden.tiny_cases()} == set(recorded["cases"])


def test_bit_identity_is_promised_on_the_recording_cpu_only():
    rec = {"torch": "2.13.0", "cpu_capability": "AVX512", "cpu": "AMD EPYC", "cpu_note": "x"}
    assert golden.same_environment(rec, {"torch": "2.13.0", "cpu_capability": "AVX512",
                                         "cpu": "AMD EPYC"})
    assert not golden.same_environment(rec, {"torch": "2.13.0", "cpu_capability": "AVX512",
                                             "cpu": "Intel(R) Xeon(R) Processor"})
    assert not golden.same_environment({k: rec[k] for k in ("torch", "cpu_capability")},
                                       {"torch": "2.13.0", "cpu_capability": "AVX512", "cpu": "?"})


def test_off_the_recording_cpu_the_blocks_losses_are_compared_too():
    # a changed quantization grid moved a loss by 30% but the tiny model's perplexity by only
    # 5e-4: the losses must catch it where tensors are not compared
    g = {"a": {"losses": [["1.7652e-06", "7.8405e-07", False]], "ppl": "389.06"}}
    moved = {"a": {"losses": [["1.2425e-06", "7.5117e-07", False]], "ppl": "388.85"}}
    assert golden.compare(g, moved, exact=False) == [
        "a: losses [['1.7652e-06', '7.8405e-07', False]] vs "
        "[['1.2425e-06', '7.5117e-07', False]] (beyond 1e-3)"]
    rounding = {"a": {"losses": [["1.76520001e-06", "7.8405e-07", False]], "ppl": "389.06"}}
    assert golden.compare(g, rounding, exact=False) == []
    flipped = {"a": {"losses": [["1.7652e-06", "7.8405e-07", True]], "ppl": "389.06"}}
    assert golden.compare(g, flipped, exact=False)
