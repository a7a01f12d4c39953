"""`python -m normtweak` under torchrun, as users launch it: two "nodes" on 127.0.0.1, and a
rank killed mid-run (the job fails, `--resume` continues from the last checkpointed block).

Each torchrun starts an agent and its workers, and each imports torch: ~25 s for the
two-node run on 2 busy cores; the kill-and-resume test runs torchrun twice (slow).
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from normtweak.cli import main
from normtweak.io import load_quantized
from normtweak.testing import tiny_batch, tiny_config

BLOCKS, LIMIT_S = 4, 300

# Rank 1 dies by SIGKILL when it starts training the norms of block k + 1: rank 0 has then
# saved block k (it passed block k + 1's first collective) and cannot finish block k + 1.
KILLING_CLI = r"""
import os, signal, sys
from normtweak.tweak import train

k, calls, real = int(sys.argv[1]), [], train.train_norms

def train_norms(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == k + 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

train.train_norms = train_norms
from normtweak.cli import main
main(sys.argv[2:], prog_name="normtweak")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("torchrun") / "llama4"
    config = tiny_config("llama")
    config.num_hidden_layers = BLOCKS
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    corpus = path.parent / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog. "
                                  * 6 for i in range(30)), encoding="utf-8")
    return path, corpus


def _args(model_dir, corpus, save_dir, batch, *extra):
    return ["tweak", "--model", str(model_dir), "--from-text", str(corpus), "--num-samples", "4",
            "--seq-len", "32", "--nbits", "3", "--group-size", "16", "--lr", "1e-2", "--iters", "2",
            "--batch-size", str(batch), "--save_dir", str(save_dir), *extra]


def _torchrun(nnodes, node_rank, port, entry, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
           "--nproc-per-node", str(2 // nnodes), "--node-rank", str(node_rank),
           "--rdzv-endpoint", f"127.0.0.1:{port}", "--max-restarts", "0", *entry]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait(procs):
    try:
        return [p.communicate(timeout=LIMIT_S) + (p.returncode,) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _logits(path):
    model, _ = load_quantized(path)
    with torch.no_grad():
        return model(input_ids=tiny_batch(2, 16, seed=11)).logits


@pytest.fixture(scope="module")
def one_process(model_dir, tmp_path_factory):
    """The single-process run with the same global batch (2 ranks x 1 = 2)."""
    folder, corpus = model_dir
    out = tmp_path_factory.mktemp("reference") / "one"
    res = CliRunner().invoke(main, _args(folder, corpus, out, 2))
    assert res.exit_code == 0, res.output
    return _logits(out)


@pytest.mark.slow  # over 10 s on 2 cores
def test_two_nodes_on_loopback_complete_like_one_process(model_dir, one_process, tmp_path):
    folder, corpus = model_dir
    port, out = free_port(), tmp_path / "two_nodes"
    entry = ["-m", "normtweak", *_args(folder, corpus, out, 1)]
    results = _wait([_torchrun(2, node, port, entry) for node in (0, 1)])
    for _, stderr, code in results:
        assert code == 0, stderr[-3000:]
    assert "saved the quantized model to" in results[0][0]
    assert "saved" not in results[1][0]  # rank 0 prints
    torch.testing.assert_close(_logits(out), one_process, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_killed_rank_fails_the_job_and_resume_continues(model_dir, one_process, tmp_path):
    folder, corpus = model_dir
    ckpt, out, k = tmp_path / "ckpt", tmp_path / "out", 1
    args = _args(folder, corpus, out, 1, "--checkpoint-dir", str(ckpt))
    script = tmp_path / "killing_cli.py"
    script.write_text(KILLING_CLI)
    [(_, stderr, code)] = _wait([_torchrun(1, 0, free_port(), [str(script), str(k), *args])])
    assert code != 0 and not out.exists()
    assert "ChildFailedError" in stderr and "SIGKILL" in stderr, stderr[-3000:]
    done = sorted(p.name for p in ckpt.glob("block_*.safetensors"))
    assert done == [f"block_{i:04d}.safetensors" for i in range(k + 1)]
    kept = {p.name: p.stat().st_mtime_ns for p in ckpt.glob("block_*.safetensors")}

    entry = ["-m", "normtweak", *args, "--resume"]
    [(_, stderr, code)] = _wait([_torchrun(1, 0, free_port(), entry)])
    assert code == 0, stderr[-3000:]
    assert len(list(ckpt.glob("block_*.safetensors"))) == BLOCKS
    assert all((ckpt / name).stat().st_mtime_ns == t for name, t in kept.items())  # not redone
    torch.testing.assert_close(_logits(out), one_process, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_run_command_under_torchrun_matches_one_process(model_dir, tmp_path):
    """`run`: rank 0 generates the calibration set and scores; the tweak is data parallel."""
    import json

    folder, corpus = model_dir

    def args(out, batch):
        return ["run", "--model", str(folder), "--num-samples", "4", "--seq-len", "32",
                "--data-dir", str(out) + "_data", "--text", str(corpus), "--eval-windows", "1",
                "--nbits", "3", "--group-size", "16", "--lr", "1e-2", "--batch-size", str(batch),
                "--save-dir", str(out)]

    res = CliRunner().invoke(main, args(tmp_path / "one", 2))
    assert res.exit_code == 0, res.output
    [(_, stderr, code)] = _wait([_torchrun(1, 0, free_port(),
                                           ["-m", "normtweak", *args(tmp_path / "two", 1)])])
    assert code == 0, stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.run.json").read_text()) for n in ("one", "two"))
    for key in ("float", "quant", "tweaked"):
        assert two["results"][key]["ppl"] == pytest.approx(one["results"][key]["ppl"], rel=1e-4)
    torch.testing.assert_close(_logits(tmp_path / "two"), _logits(tmp_path / "one"),
                               rtol=1e-4, atol=1e-4)
