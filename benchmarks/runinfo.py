"""What every benchmark run records about itself: one memory measure, the code revision and
the CPU (its model and the bf16 instructions that change AutoRound's cost several-fold).

Memory: `peak_rss_mb` is the peak resident memory of the process that quantized, from just
before it started quantizing (the float model already loaded, so included) to just after:
Linux's VmHWM, reset with /proc/self/clear_refs before the work. Where /proc has no VmHWM
the process-lifetime ru_maxrss is used and `PEAK_RSS_NOTE` says so in the row.
"""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK_RSS = "peak RSS while quantizing (MB; VmHWM reset just before, the float model included)"


def peak_rss_reset() -> bool:
    """Start a new peak-RSS measure; False where the kernel cannot reset it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """VmHWM since the last reset (MB), else ru_maxrss of the whole process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def revision() -> str:
    """The commit the benchmark runs (+dirty when normtweak/ has uncommitted changes)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "normtweak").strip()
    return head + ("+dirty" if dirty else "")


BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo(text: str | None = None) -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in `text`, /proc/cpuinfo's format (default: this
    machine's; ("unknown", set()) where there is none)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or "unknown", flags


def cpu(text: str | None = None) -> dict:
    """The CPU's model name and which of BF16_FLAGS it has (see cpuinfo)."""
    model, flags = cpuinfo(text)
    return {"model": model, "bf16": [f for f in BF16_FLAGS if f in flags]}
