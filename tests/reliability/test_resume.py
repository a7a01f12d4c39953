"""Resume after a real process death: kill `normtweak tweak` after block k, resume, compare.

The run is a child process that dies with os._exit (no cleanup, no finally blocks, no
atexit: what a SIGKILL or an OOM kill leaves) either right after block k's checkpoint is
written or halfway through writing block k+1's. `--resume` must then give the model
an uninterrupted run gives, to the last bit.
"""

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from normtweak.cli import main
from normtweak.io import load_quantized
from normtweak.testing import tiny_batch, tiny_config

# Runs the CLI with a hook that kills the process at a chosen point of checkpointing.
CRASHING_CLI = r"""
import os, sys
from normtweak.tweak import checkpoint

mode, k = sys.argv[1], int(sys.argv[2])
real_save_block, real_save_file = checkpoint.CheckpointDir.save_block, checkpoint.save_file

def save_block(self, index, block):
    if mode == "mid_write" and index == k + 1:
        def torn_write(tensors, path, metadata=None):  # half a file, then death
            real_save_file(tensors, path, metadata=metadata)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            os._exit(17)
        checkpoint.save_file = torn_write
    real_save_block(self, index, block)
    if mode == "after_save" and index == k:
        os._exit(17)

checkpoint.CheckpointDir.save_block = save_block
from normtweak.cli import main
main(sys.argv[3:], prog_name="normtweak")
"""

BLOCKS = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("resume") / "llama4"
    config = tiny_config("llama")
    config.num_hidden_layers = BLOCKS
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    corpus = path.parent / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog. "
                                  * 6 for i in range(30)), encoding="utf-8")
    return path, corpus


def _args(model_dir, corpus, save_dir, *extra):
    return ["tweak", "--model", str(model_dir), "--from-text", str(corpus), "--num-samples", "3",
            "--seq-len", "32", "--nbits", "3", "--group-size", "16", "--lr", "1e-2", "--iters", "2",
            "--save_dir", str(save_dir), *extra]


@pytest.fixture(scope="module")
def uninterrupted(model_dir, tmp_path_factory):
    folder, corpus = model_dir
    out = tmp_path_factory.mktemp("reference") / "uninterrupted"
    res = CliRunner().invoke(main, _args(folder, corpus, out))
    assert res.exit_code == 0, res.output
    return _logits(out)


def _logits(path):
    model, _ = load_quantized(path)
    with torch.no_grad():
        return model(input_ids=tiny_batch(2, 16, seed=11)).logits


@pytest.mark.slow  # a child interpreter imports torch + transformers: ~10 s on 2 busy cores
@pytest.mark.parametrize("mode", ["after_save", "mid_write"])
def test_killed_run_resumes_to_the_uninterrupted_model(model_dir, uninterrupted, tmp_path, mode):
    folder, corpus = model_dir
    ckpt, crashed_out, k = tmp_path / "ckpt", tmp_path / "resumed", 1
    proc = subprocess.run([sys.executable, "-c", CRASHING_CLI, mode, str(k),
                           *_args(folder, corpus, crashed_out, "--checkpoint-dir", str(ckpt))],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert not crashed_out.exists()  # died before saving: no partial model
    done = sorted(p.name for p in ckpt.glob("block_*.safetensors"))
    assert done == [f"block_{i:04d}.safetensors" for i in range(k + 1)]
    if mode == "mid_write":
        assert len(list(ckpt.glob(".block_0002.safetensors.*.tmp"))) == 1  # the torn file

    res = CliRunner().invoke(main, _args(folder, corpus, crashed_out, "--checkpoint-dir", str(ckpt),
                                         "--resume"))
    assert res.exit_code == 0, res.output
    assert list(ckpt.glob(".*.tmp")) == []  # the torn write was cleaned up, not loaded
    assert len(list(ckpt.glob("block_*.safetensors"))) == BLOCKS
    torch.testing.assert_close(_logits(crashed_out), uninterrupted, atol=0, rtol=0)
