"""Per-block cost of normtweak's joint tuning beside AutoRound's, at the same steps x batch.

    OMP_NUM_THREADS=1 python benchmarks/block_cost.py --threads 1          # K=2 blocks, 48 and 200 steps

Both tune SmolLM2 truncated to its first K blocks (model.model.layers[:K]) from the same
calibration ids (calibration_from_text(tokenizer, "wikipedia", N, 512, seed=0)), W4 g64
symmetric, batch 8, on the same machine with the same number of torch threads, one run
after the other (never two at once). For a target of S steps per block:

- normtweak: tweak_model(..., TweakSpec.preset("joint", iters=ceil(S / (N / 8)))), i.e.
  S rounded up to whole passes over the N samples (200 -> 13 passes x 16 = 208 steps at
  N=128), with keep_better on (its default) and, at the steps in --keep-better-off-at, off
  (the loss before training is measured either way; keep_better adds a pass over the
  calibration set only for a block whose start it restores);
- AutoRound: AutoRound(..., iters=S, batch_size=8, nsamples=N, seqlen=512, sym=True,
  group_size=64) in its own environment (--autoround-python, a subprocess, like
  benchmarks/peers.py), with amp=True (its default: bfloat16 autocast where the CPU has bf16)
  and amp=False (float32), and its other defaults: AutoRound 0.16 turns torch.compile on for
  a Linux CPU, so its compile time is inside quantize(); normtweak runs eagerly, and with
  --methods normtweak-compile also with RunSpec.compile (its training steps' block forward
  through torch.compile, compile time included):

    OMP_NUM_THREADS=1 python benchmarks/block_cost.py --threads 1 --steps 48 \
        --keep-better-off-at '' --methods normtweak,normtweak-compile \
        --out results/block_cost_compile.json

Each run is timed around the whole call (tweak_model / AutoRound.quantize(): input capture
and targets included) in wall seconds (time.perf_counter) and CPU seconds of the process
and of its finished child processes (torch.compile's compile workers; the rows in
results/block_cost.json were measured before the children were counted), and divided by K;
normtweak's own per-block wall seconds (BlockResult.seconds: block 0's float targets are
made before it, in the input capture) are listed too. The table goes to stdout, everything to --out (results/block_cost.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import cpuinfo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    return cpuinfo()[0]


def cpu_flags() -> list[str]:
    have = cpuinfo()[1]
    return sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)


def load_truncated(model_name: str, blocks: int):
    """SmolLM2 (any normtweak model) with only its first `blocks` decoder blocks."""
    from normtweak.loading.float import load_model

    model, tokenizer = load_model(model_name)
    layers = model.model.layers
    if not 1 <= blocks <= len(layers):
        raise ValueError(f"--blocks must be in 1..{len(layers)}, got {blocks}")
    model.model.layers = layers[:blocks]
    model.config.num_hidden_layers = blocks
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = model.config.layer_types[:blocks]
    return model.float().eval(), tokenizer


def steps_per_pass(samples: int, batch: int) -> int:
    return math.ceil(samples / batch)


def normtweak_iters(steps: int, samples: int, batch: int) -> int:
    """Whole passes over the samples that give at least `steps` steps."""
    return math.ceil(steps / steps_per_pass(samples, batch))


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (torch.compile's compile
    workers are child processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn):
    """(result, wall seconds, CPU seconds of this process and its children) of fn()."""
    w, c = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - w, cpu_seconds() - c


# --- normtweak (this process) --------------------------------------------------------------


def run_normtweak(args, ids: torch.Tensor, steps: int, keep_better: bool,
                  compile: bool = False) -> dict:
    """normtweak's joint tuning of the truncated model; compile: RunSpec.compile."""
    from normtweak.config import QuantSpec, RunSpec, TweakSpec
    from normtweak.tweak.pipeline import tweak_model

    model, _ = load_truncated(args.model, args.blocks)
    iters = normtweak_iters(steps, ids.shape[0], args.batch)
    quant = QuantSpec(bits=args.bits, group_size=args.group_size, symmetric=True)
    tweak = TweakSpec.preset("joint", iters=iters, batch_size=args.batch, keep_better=keep_better)
    load = os.getloadavg()
    run = RunSpec(progress=False, compile=compile)
    result, wall, cpu = timed(lambda: tweak_model(model, ids, quant, tweak, run))
    done = iters * steps_per_pass(ids.shape[0], args.batch)
    return {"method": "normtweak joint" + ("" if keep_better else ", keep_better off")
            + (", torch.compile" if compile else ""), "compile": compile,
            "target_steps": steps, "steps": done, "batch": args.batch, "iters": iters,
            "keep_better": keep_better, "dtype": "float32", "wall_s": wall, "cpu_s": cpu,
            "wall_s_per_block": wall / args.blocks, "cpu_s_per_block": cpu / args.blocks,
            "block_wall_s": [b.seconds for b in result.blocks],
            "block_losses": [[b.loss_before, b.loss_after] for b in result.blocks],
            "kept_start": [b.kept_start for b in result.blocks],
            "quant": quant.as_dict(), "tweak": tweak.as_dict(), "torch_threads": torch.get_num_threads(),
            "loadavg_before": load, "loadavg_after": os.getloadavg()}


# --- AutoRound (its environment, a subprocess) ---------------------------------------------


def autoround_worker(args) -> None:
    """Runs in AutoRound's environment: quantize the truncated model, time quantize()."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from auto_round import AutoRound
    from safetensors.torch import load_file

    from normtweak.assets import resolve_model

    ids = load_file(args.calib)["input_ids"].to(torch.int64)
    model, tokenizer = load_truncated(args.model, args.blocks)
    model.config.name_or_path = str(Path(resolve_model(args.model)).resolve())
    dataset = [ids[i : i + args.batch] for i in range(0, ids.shape[0], args.batch)]
    ar = AutoRound(model, tokenizer, bits=args.bits, group_size=args.group_size, sym=True,
                   dataset=dataset, nsamples=ids.shape[0], seqlen=ids.shape[1],
                   batch_size=args.batch, iters=args.ar_iters, device_map="cpu", seed=args.seed,
                   amp=args.ar_amp == "on")
    load = os.getloadavg()
    _, wall, cpu = timed(ar.quantize)
    amp_dtype = getattr(ar, "amp_dtype", None)
    out = {"method": "AutoRound " + ("amp (its default)" if args.ar_amp == "on" else "amp=False"),
           "target_steps": args.ar_iters, "steps": args.ar_iters, "batch": args.batch,
           "iters": args.ar_iters, "amp": getattr(ar, "amp", None),
           "dtype": str(amp_dtype if amp_dtype is not None and getattr(ar, "amp", False)
                        else "torch.float32").replace("torch.", ""),
           "wall_s": wall, "cpu_s": cpu, "wall_s_per_block": wall / args.blocks,
           "cpu_s_per_block": cpu / args.blocks, "torch_threads": torch.get_num_threads(),
           "loadavg_before": load, "loadavg_after": os.getloadavg(), "versions": versions()}
    config = getattr(ar, "quantize_config", None)
    context = getattr(ar, "calibration_context", None)
    for name in ("lr", "minmax_lr", "enable_minmax_tuning", "enable_quanted_input",
                 "gradient_accumulate_steps", "enable_torch_compile", "batch_size", "nsamples",
                 "seqlen"):
        # torch.compile: the compressor's final decision (AutoRound turns it on by default on
        # a Linux CPU; its config object keeps the False it was constructed with)
        owners = (ar, config, context) if name == "enable_torch_compile" else (config, context, ar)
        for owner in owners:
            value = getattr(owner, name, None)
            if isinstance(value, (bool, int, float, str)):
                out.setdefault(f"used_{name}", value)
    Path(args.worker_out).write_text(json.dumps(out, indent=2, default=str) + "\n")


def run_autoround(args, calib: Path, steps: int, amp: bool) -> dict:
    out = Path(args.tmp_dir) / f"autoround_{steps}_{'amp' if amp else 'fp32'}.json"
    out.unlink(missing_ok=True)
    cmd = [args.autoround_python, str(Path(__file__).resolve()), "--autoround-worker",
           "--model", args.model, "--blocks", str(args.blocks), "--bits", str(args.bits),
           "--group-size", str(args.group_size), "--batch", str(args.batch),
           "--threads", str(args.threads), "--seed", str(args.seed), "--calib", str(calib),
           "--ar-iters", str(steps), "--ar-amp", "on" if amp else "off",
           "--worker-out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1")
    print("  $ " + " ".join(cmd), flush=True)
    log = Path(args.tmp_dir) / f"autoround_{steps}_{'amp' if amp else 'fp32'}.log"
    with log.open("w") as f:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              check=False)
    if proc.returncode != 0 or not out.is_file():
        tail = log.read_text()[-2000:]
        return {"method": f"AutoRound {'amp' if amp else 'amp=False'}", "target_steps": steps,
                "error": f"exit {proc.returncode}", "log_tail": tail}
    return json.loads(out.read_text())


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "auto-round"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# --- table ---------------------------------------------------------------------------------


def markdown(rows: list[dict]) -> str:
    head = ("| method | steps (target) | batch | dtype | wall s / block | CPU s / block | "
            "wall ms / step (all in) | normtweak per-block wall s | load avg (1 min, before) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['target_steps']} | – | – | failed: {r['error']} "
                         "| – | – | – | – |")
            continue
        per_step = 1000 * r["wall_s_per_block"] / r["steps"]
        blocks = ", ".join(f"{s:.1f}" for s in r.get("block_wall_s", [])) or "–"
        lines.append(f"| {r['method']} | {r['steps']} ({r['target_steps']}) | {r['batch']} | "
                     f"{r['dtype']} | {r['wall_s_per_block']:.1f} | {r['cpu_s_per_block']:.1f} | "
                     f"{per_step:.0f} | {blocks} | {r['loadavg_before'][0]:.2f} |")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


METHODS = ("normtweak", "normtweak-compile", "autoround-amp", "autoround-fp32")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--blocks", type=int, default=2, help="K: the model's first K blocks")
    p.add_argument("--samples", type=int, default=128, help="N calibration windows")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", default="48,200", help="target steps per block, comma list")
    p.add_argument("--keep-better-off-at", default="48",
                   help="steps at which normtweak also runs with keep_better off ('' = none)")
    p.add_argument("--methods", default="normtweak,autoround-amp,autoround-fp32",
                   help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="calibration windows' and AutoRound's seed")
    p.add_argument("--autoround-python", default=str(ROOT.parent / "venv-autoround" / "bin" / "python"))
    p.add_argument("--tmp-dir", default=str(ROOT / "results" / "tmp" / "block_cost"))
    p.add_argument("--out", default=str(ROOT / "results" / "block_cost.json"))
    # the AutoRound worker (run by this script in AutoRound's environment)
    p.add_argument("--autoround-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--calib", help=argparse.SUPPRESS)
    p.add_argument("--ar-iters", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ar-amp", choices=["on", "off"], help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.step_list = [int(s) for s in args.steps.split(",") if s]
    args.kb_off = {int(s) for s in args.keep_better_off_at.split(",") if s}
    args.method_list = [m for m in args.methods.split(",") if m]
    bad = set(args.method_list) - set(METHODS)
    if bad:
        p.error(f"unknown method(s) {sorted(bad)}")
    return args


def planned_runs(args, steps: int) -> list[tuple[str, bool]]:
    """(method, flag) of each run at `steps`, in order; flag: keep_better (normtweak) or amp
    (AutoRound)."""
    runs = []
    if "normtweak" in args.method_list:
        runs.append(("normtweak", True))
        if steps in args.kb_off:
            runs.append(("normtweak", False))
    if "normtweak-compile" in args.method_list:
        runs.append(("normtweak-compile", True))
    if "autoround-amp" in args.method_list:
        runs.append(("autoround", True))
    if "autoround-fp32" in args.method_list:
        runs.append(("autoround", False))
    return runs


def main(argv=None) -> dict:
    args = parse(argv)
    if args.autoround_worker:
        autoround_worker(args)
        return {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from safetensors.torch import save_file

    from normtweak.calib.text import calibration_from_text

    _, tokenizer = load_truncated(args.model, args.blocks)
    ids = calibration_from_text(tokenizer, "wikipedia", args.samples, args.seq_len,
                                seed=args.seed).input_ids.contiguous()
    tmp = Path(args.tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    calib = tmp / f"calib_wikipedia_{args.samples}x{args.seq_len}_s{args.seed}.safetensors"
    save_file({"input_ids": ids}, str(calib))
    command = "python benchmarks/block_cost.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    machine = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "loadavg_start": os.getloadavg(), "platform": platform.platform(),
               "versions": versions()}
    print(f"{machine['cpu']} ({', '.join(machine['cpu_flags'])}), {machine['cores']} cores, "
          f"torch threads {machine['torch_threads']}, load {machine['loadavg_start']}", flush=True)
    rows = []
    out = Path(args.out)

    def save():
        machine["loadavg_end"] = os.getloadavg()
        result = {"command": command, "machine": machine, "blocks": args.blocks,
                  "calibration": {"text": "wikipedia", "samples": args.samples,
                                  "seq_len": args.seq_len, "seed": args.seed},
                  "scheme": {"bits": args.bits, "group_size": args.group_size,
                             "symmetric": True, "full_range": True},
                  "rows": rows, "table": markdown(rows)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return result

    for steps in args.step_list:
        for method, flag in planned_runs(args, steps):
            print(f"{method} {steps} steps ({'amp' if method == 'autoround' else 'keep_better'}"
                  f"={flag}) ...", flush=True)
            row = (run_autoround(args, calib, steps, flag) if method == "autoround"
                   else run_normtweak(args, ids, steps, flag, method == "normtweak-compile"))
            rows.append(row)
            print(markdown([row]).splitlines()[-1], flush=True)
            save()
    result = save()
    caption = (f"{args.model} first {args.blocks} blocks; {args.samples} x {args.seq_len} "
               f"wikipedia windows (seed {args.seed}); W{args.bits} g{args.group_size} sym; "
               f"{machine['torch_threads']} torch thread(s) on {machine['cpu']} "
               f"({machine['cores']} cores)")
    print("\n" + caption + "\n" + result["table"])
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
