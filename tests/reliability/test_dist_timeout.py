"""A stalled rank fails the job after NORMTWEAK_DIST_TIMEOUT seconds, not after 30 minutes: a
real two-process gloo group where rank 1 is stopped (SIGSTOP) before a collective."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from normtweak import dist

RANK = r"""
import os, signal, sys, time
import torch
from normtweak import dist

dist.init_from_env()
import torch.distributed as d

if d.get_rank() == 1:
    os.kill(os.getpid(), signal.SIGSTOP)  # a stalled rank (stopped, not dead)
t0 = time.time()
try:
    d.all_reduce(torch.ones(1))
except Exception as err:  # what rank 0 gets when the timeout runs out
    print(f"collective failed after {time.time() - t0:.1f} s: {type(err).__name__}", flush=True)
    os._exit(3)
print("reduced", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two interpreters import torch
def test_a_stopped_rank_fails_the_job_after_the_timeout(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": "2", "NORMTWEAK_DIST_TIMEOUT": "5", "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK], env={**env, "RANK": str(r),
                                                                 "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    t0 = time.time()
    try:
        out, err = ranks[0].communicate(timeout=180)  # the default (600 s) would be far longer
    finally:
        for proc in ranks:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert ranks[0].returncode == 3, out + err[-3000:]
    assert "collective failed after" in out
    waited = float(out.split("failed after ")[1].split()[0])
    assert 4 <= waited < 60, out
    assert time.time() - t0 < 180


def test_the_timeout_comes_from_the_environment(monkeypatch):
    assert dist.default_timeout_s({}) in (600.0, 1800.0)  # CPU / CUDA
    assert dist.default_timeout_s({"NORMTWEAK_DIST_TIMEOUT": "45"}) == 45.0
    for bad in ("abc", "0", "-3", "inf", "nan"):
        with pytest.raises(ValueError, match=f"NORMTWEAK_DIST_TIMEOUT={bad!r}: give the"):
            dist.default_timeout_s({"NORMTWEAK_DIST_TIMEOUT": bad})


def test_cpu_runs_default_to_ten_minutes(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dist.default_timeout_s({}) == 600.0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dist.default_timeout_s({}) == 1800.0


def test_the_cli_takes_the_timeout_and_says_a_bad_one_in_one_line(monkeypatch):
    from click.testing import CliRunner

    from normtweak import dist
    from normtweak.cli import main

    seen = []
    monkeypatch.setattr(dist, "init_from_env", lambda timeout_s=None: seen.append(timeout_s))
    r = CliRunner().invoke(main, ["--dist-timeout", "90", "eval", "--help"])
    assert r.exit_code == 0 and seen == [90.0]
    monkeypatch.undo()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("NORMTWEAK_DIST_TIMEOUT", "soon")
    r = CliRunner().invoke(main, ["eval", "--help"])
    assert r.exit_code == 1 and "NORMTWEAK_DIST_TIMEOUT='soon'" in r.output
    assert "Traceback" not in r.output
