"""Shared by the fault tests of tests/reliability: tiny model folders, the CLI, assertions,
child processes that stop at a chosen point (to be killed for real), a tiny file system."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

CORPUS = "\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog. " * 6
                     for i in range(30))


def one_error(res, *needles: str) -> str:
    """Assert a handled failure: exit 1, exactly one `Error:` line holding every needle."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), f"unhandled {res.exception!r}"  # no traceback
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def llama_folder(path: Path, tokenizer, blocks: int = 2, seed: int = 0, tied: bool = True) -> Path:
    """A tiny Llama saved with save_pretrained (weights from `seed`), with its tokenizer."""
    from transformers import AutoModelForCausalLM

    from normtweak.testing import tiny_config

    config = tiny_config("llama")
    config.num_hidden_layers = blocks
    config.tie_word_embeddings = tied
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tweak_args(model, corpus, save_dir, *extra) -> list[str]:
    return ["tweak", "--model", str(model), "--from-text", str(corpus), "--num-samples", "2",
            "--seq-len", "32", "--nbits", "3", "--group-size", "16", "--lr", "1e-2",
            "--eval-windows", "0", "--save_dir", str(save_dir), *extra]


def staging_leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


# A child that runs the CLI and, when the hook fires, writes its pid to READY and waits for
# GO (or to be killed). HOOK names what to wrap: "block N" (after block N's checkpoint),
# "save_file" (normtweak.io.save's weights writer, after writing), "calibration" (the
# calibration set's writer, after writing), "swap" (between the two renames of a replaced
# folder, with the one-step swap switched off).
HOOKED_CLI = r"""
import os, sys, time
from pathlib import Path

ready, go, hook = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def pause():
    ready.write_text(str(os.getpid()))
    deadline = time.time() + 300
    while not go.exists() and time.time() < deadline:
        time.sleep(0.05)

if hook.startswith("block"):
    from normtweak.tweak import checkpoint
    real_block, k = checkpoint.CheckpointDir.save_block, int(hook.split()[1])
    def save_block(self, index, block):
        real_block(self, index, block)
        if index == k:
            pause()
    checkpoint.CheckpointDir.save_block = save_block
elif hook == "save_file":
    from normtweak.io import save
    real_file = save.save_file
    def save_file(*args, **kwargs):
        real_file(*args, **kwargs)
        pause()
    save.save_file = save_file
elif hook == "calibration":
    import safetensors.torch
    real_st = safetensors.torch.save_file
    def st_save(*args, **kwargs):
        real_st(*args, **kwargs)
        pause()
    safetensors.torch.save_file = st_save
elif hook == "swap":
    from normtweak.common import files
    files.exchange = lambda a, b: False
    real_replace, moves = os.replace, []
    def replace(src, dst):
        real_replace(src, dst)
        moves.append(dst)
        if ".old-" in str(dst):
            pause()
    files.os.replace = replace
from normtweak.cli import main
main(sys.argv[4:], prog_name="normtweak")
"""


class Child:
    """The CLI in a child process, stopped at a hook; kill() it (SIGKILL) or go() on."""

    def __init__(self, tmp: Path, hook: str, args: list[str]) -> None:
        self.ready, self.go_file = tmp / f"ready-{time.monotonic_ns()}", tmp / f"go-{time.monotonic_ns()}"
        self.proc = subprocess.Popen([sys.executable, "-c", HOOKED_CLI, str(self.ready),
                                      str(self.go_file), hook, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def wait_for_hook(self, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(f"the child ended (rc {self.proc.returncode}) before its hook:\n"
                            f"{out[-2000:]}\n{err[-3000:]}")
            if time.time() > deadline:
                self.kill()
                pytest.fail("the child never reached its hook")
            time.sleep(0.05)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.communicate()

    def go(self, timeout: float = 240) -> tuple[int, str]:
        self.go_file.write_text("go")
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out + err


class SmallDisk:
    """A real 2 MiB tmpfs at `path` (root only); fill(leave) leaves that many bytes free."""

    def __init__(self, path: Path) -> None:
        path.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            why = res.stderr.strip() or "no permission"
            pytest.skip(f"a small tmpfs cannot be mounted here ({why}): disk-full tests need "
                        f"root or CAP_SYS_ADMIN")
        self.path = path

    def fill(self, leave: int) -> None:
        import shutil

        free = shutil.disk_usage(self.path).free
        with open(self.path / "filler", "wb") as f:
            f.write(b"\0" * max(0, free - leave))

    def entries(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir())

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
