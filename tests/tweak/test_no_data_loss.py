"""Through the CLI: nothing the user has is destroyed; interrupted work is named and resumable."""

import json
import shlex
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from normtweak.cli import main
from normtweak.testing import tiny_config

BLOCKS = 4


@pytest.fixture(scope="module")
def work(tmp_path_factory, tokenizer):
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("noloss")
    config = tiny_config("llama")
    config.num_hidden_layers = BLOCKS
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "llama4")
    tokenizer.save_pretrained(root / "llama4")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog. "
                                  * 6 for i in range(30)), encoding="utf-8")
    return root


def _args(work, save_dir, *extra):
    return ["tweak", "--model", str(work / "llama4"), "--from-text", str(work / "corpus.txt"),
            "--num-samples", "2", "--seq-len", "32", "--nbits", "3", "--group-size", "16",
            "--lr", "1e-2", "--save_dir", str(save_dir), *extra]


def _invoke(args):
    return CliRunner().invoke(main, args)


def test_save_dir_holding_other_models_is_never_replaced(work, tmp_path):
    models = tmp_path / "models"
    (models / "smollm2-135m").mkdir(parents=True)
    (models / "smollm2-135m" / "model.safetensors").write_bytes(b"converted weights")
    for extra in ([], ["--overwrite"]):
        res = _invoke(_args(work, models, *extra))
        assert res.exit_code == 1 and "models/NAME" in res.output, res.output
    assert (models / "smollm2-135m" / "model.safetensors").read_bytes() == b"converted weights"
    assert sorted(p.name for p in models.iterdir()) == ["smollm2-135m"]


def test_own_output_needs_overwrite_and_is_replaced_whole(work, tmp_path):
    out = tmp_path / "q"
    assert _invoke(_args(work, out)).exit_code == 0
    res = _invoke(_args(work, out, "--nbits", "4"))
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert json.loads((out / "normtweak_quantization.json").read_text())["quant"]["bits"] == 3
    res = _invoke(_args(work, out, "--nbits", "4", "--overwrite"))
    assert res.exit_code == 0, res.output
    assert f"saved the quantized model to {out}" in res.output
    assert json.loads((out / "normtweak_quantization.json").read_text())["quant"]["bits"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_checkpoint_reuse_without_resume_is_refused(work, tmp_path):
    ckpt = tmp_path / "ckpt"
    assert _invoke(_args(work, tmp_path / "a", "--checkpoint-dir", str(ckpt))).exit_code == 0
    before = {p.name: p.read_bytes() for p in ckpt.glob("block_*")}
    assert len(before) == BLOCKS
    res = _invoke(_args(work, tmp_path / "b", "--checkpoint-dir", str(ckpt)))
    assert res.exit_code == 1
    assert "blocks 0\u20133" in res.output and "--resume" in res.output and "--overwrite" in res.output
    assert {p.name: p.read_bytes() for p in ckpt.glob("block_*")} == before
    assert not (tmp_path / "b").exists()
    # a different run cannot resume from them; the error no longer suggests dropping --resume
    res = _invoke(_args(work, tmp_path / "b", "--checkpoint-dir", str(ckpt), "--resume",
                        "--lr", "1e-3"))
    assert res.exit_code == 1 and "different run" in res.output and "--overwrite" in res.output
    assert "drop --resume" not in res.output
    res = _invoke(_args(work, tmp_path / "b", "--checkpoint-dir", str(ckpt), "--overwrite",
                        "--lr", "1e-3"))
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in ckpt.glob("block_*")} != before


def test_resume_without_checkpoint_dir_is_an_error(work, tmp_path):
    res = _invoke(_args(work, tmp_path / "a", "--resume"))
    assert res.exit_code == 1 and "--resume needs --checkpoint-dir" in res.output
    assert not (tmp_path / "a").exists()


def test_interrupt_without_checkpoint_dir_says_nothing_was_saved(work, tmp_path, monkeypatch):
    from normtweak.tweak import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "tweak_model", interrupted)
    res = _invoke(_args(work, tmp_path / "out"))
    assert res.exit_code == 130 and "nothing was saved" in res.output and "--checkpoint-dir" in res.output


# The CLI with a hook that sends this process a real SIGINT (Ctrl-C) after block k is saved.
INTERRUPTED_CLI = r"""
import os, signal, sys, time
from normtweak.tweak import checkpoint

k = int(sys.argv[1])
real = checkpoint.CheckpointDir.save_block

def save_block(self, index, block):
    real(self, index, block)
    if index == k:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the KeyboardInterrupt arrives here

checkpoint.CheckpointDir.save_block = save_block
from normtweak.cli import main
main(sys.argv[2:], prog_name="normtweak")
"""


@pytest.mark.slow  # a child interpreter imports torch + transformers
def test_ctrl_c_names_the_saved_blocks_and_the_resume_command(work, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    args = _args(work, out, "--checkpoint-dir", str(ckpt))
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_CLI, "1", *args],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert f"checkpoints of blocks 0\u20131 in {ckpt}" in proc.stderr
    assert "Aborted!" not in proc.stderr + proc.stdout
    assert not out.exists()
    resume_line = proc.stderr.split("resume with:\n", 1)[1].splitlines()[0].strip()
    argv = shlex.split(resume_line)
    assert argv[0] == "normtweak" and argv[1:] == [*args, "--resume"]

    res = _invoke(argv[1:])
    assert res.exit_code == 0, res.output
    assert "resuming from block 2" in res.output
    assert "restored from checkpoint" in res.output and "nan->nan" not in res.output
    assert (out / "config.json").is_file()

