"""Peak memory of norm tweaking against model size; a model larger than the memory allowed.

    python benchmarks/memory.py                  # ~5 minutes on one thread
    python benchmarks/memory.py --cases smollm2-eager,smollm2-lazy --device cuda

Each case runs in a fresh child process, which reports its own peak resident set size
(resource.getrusage ru_maxrss) and, on CUDA, torch.cuda.max_memory_allocated:

- smollm2-eager: SmolLM2-135M loaded whole (normtweak.load_model), activations in memory.
- smollm2-lazy: the same model with blocks on the meta device, each read from its
  safetensors file on its turn (normtweak.tweak.offload), activations on disk.
- llama-1.1b: a TinyLlama-1.1B-shaped Llama (hidden 2048, 22 blocks, GQA 32/4 heads,
  intermediate 5632, vocab 32000, untied head) with seeded random weights, written as
  one safetensors shard per block. Its float32 weights are 4.4 GB; the child may use
  at most --limit of private memory (RLIMIT_DATA: heap and anonymous maps, so a
  second copy of the weights cannot be allocated) and must still finish.
Prints a table and writes results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

SYNTHETIC = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                 "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
                 "max_position_embeddings": 2048, "tie_word_embeddings": False}


# glibc's malloc raises its mmap threshold as large blocks are freed, then serves them from a
# fragmented heap that never shrinks (measured on SmolLM2: +6 MiB RSS per block instead of the
# +2 MiB of quantized weights); a fixed threshold returns freed weights to the system.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}


def _status_bytes(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM, ...) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def write_synthetic(folder: Path, seed: int = 0) -> Path:
    """A random-weight Llama folder, one safetensors shard per block (never whole in memory)."""
    import torch
    import transformers
    from accelerate import init_empty_weights
    from safetensors.torch import save_file

    config = transformers.LlamaConfig(**SYNTHETIC, bos_token_id=1, eos_token_id=2)
    marker = folder / "done.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"config": SYNTHETIC, "seed": seed}:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with init_empty_weights():
        model = transformers.AutoModelForCausalLM.from_config(config)
    groups: dict[str, list[tuple[str, tuple]]] = {}
    for name, p in model.named_parameters():
        shard = name.split(".")[2] if name.startswith("model.layers.") else "outside"
        groups.setdefault(shard, []).append((name, tuple(p.shape)))
    gen = torch.Generator().manual_seed(seed)
    weight_map = {}
    for i, (shard, params) in enumerate(groups.items()):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (torch.ones(s) if "norm" in n else torch.randn(s, generator=gen) * 0.02)
                   for n, s in params}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n, _ in params})
    total = sum(math.prod(s) * 4 for params in groups.values() for _, s in params)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    config.save_pretrained(folder)
    marker.write_text(json.dumps({"config": SYNTHETIC, "seed": seed}))
    return folder


def run_case(case: dict) -> dict:
    """In the child: load, tweak, report peak memory (bytes) and time.

    A case with expect_fail (the whole model loaded under the limit) reports its error.
    """
    try:
        return _run_case(case)
    except (MemoryError, RuntimeError) as err:
        if not case.get("expect_fail"):
            raise
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"case": case["name"], "load": case["load"], "data_limit_bytes": case.get("limit"),
                "error": f"{type(err).__name__}: {str(err)[:200]}", "peak_rss": usage.ru_maxrss * 1024}


def _run_case(case: dict) -> dict:
    if case.get("limit"):
        resource.setrlimit(resource.RLIMIT_DATA, (case["limit"], case["limit"]))
    import torch

    torch.set_num_threads(case["threads"])
    from normtweak.config import QuantSpec, RunSpec, TweakSpec
    from normtweak.tweak.pipeline import tweak_model
    from normtweak.walk.activations import ActivationBudget

    after_import = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    loader = None
    if case["load"] == "lazy":
        from normtweak.tweak.offload import load_lazily

        model, _, loader = load_lazily(case["folder"])
    else:
        from normtweak.loading.float import load_model

        model, _tok = load_model(case["folder"])
    after_load = _status_bytes("VmRSS")
    if case.get("calibration"):  # made by the parent, so parsing the corpus is not measured here
        from safetensors.torch import load_file

        ids = load_file(case["calibration"])["input_ids"].long()
    else:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(3, model.config.vocab_size, (case["samples"], case["seq_len"]), generator=gen)
    n, t = ids.shape
    params = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    budget = ActivationBudget(case["budget"], folder=case.get("spill_dir"))
    device = case["device"]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    result = tweak_model(model, ids, QuantSpec(bits=4, group_size=case["group_size"], symmetric=False),
                         TweakSpec.preset("paper", lr=1e-5, scale=5.0, keep_better=True),
                         RunSpec(device=device, activation_budget=budget.limit, progress=False),
                         block_loader=loader)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    tensors = list(model.parameters()) + list(model.buffers())
    quantized = sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())
    return {
        "case": case["name"], "load": case["load"], "params": params, "quantized_model_bytes": quantized,
        "blocks": len(result.blocks), "float_weights_bytes": weights,
        "activation_set_bytes": n * t * model.config.hidden_size * 4,
        "activation_budget": case["budget"], "activations_peak_in_memory": budget.peak_in_memory,
        "activations_spilled_bytes": budget.spilled, "data_limit_bytes": case.get("limit"),
        "rss_after_import": after_import, "rss_after_load": after_load,
        "peak_rss": usage.ru_maxrss * 1024,
        "peak_cuda": torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else None,
        "seconds": round(time.perf_counter() - t0, 1), "calibration": f"{n}x{t}",
        "device": device, "finite": all(b.loss_after == b.loss_after for b in result.blocks),
    }


def smollm2_calibration(folder: str, samples: int, seq_len: int, work_dir: Path) -> str:
    """Wikipedia train windows for SmolLM2, saved once for the children to read."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from normtweak.calib.text import calibration_from_text

    path = work_dir / f"smollm2_wikipedia_{samples}x{seq_len}.safetensors"
    if not path.is_file():
        ids = calibration_from_text(AutoTokenizer.from_pretrained(folder), "wikipedia", samples,
                                    seq_len, 0).input_ids
        work_dir.mkdir(parents=True, exist_ok=True)
        save_file({"input_ids": ids}, str(path))
    return str(path)


def cases(args) -> list[dict]:
    from normtweak.assets import resolve_model

    common = {"threads": args.threads, "device": args.device, "spill_dir": str(args.work_dir / "spill")}
    smol = resolve_model("smollm2-135m")  # converts the GGUF on the first call (about a minute)
    calib = smollm2_calibration(smol, args.samples, args.seq_len, args.work_dir)
    all_cases = {
        "smollm2-eager": {"folder": smol, "load": "eager", "budget": None, "group_size": 64,
                          "calibration": calib},
        "smollm2-lazy": {"folder": smol, "load": "lazy", "budget": "0", "group_size": 64,
                         "calibration": calib},
        "llama-1.1b": {"folder": None, "load": "lazy", "budget": args.budget, "group_size": 128,
                       "samples": args.big_samples, "seq_len": args.big_seq_len, "limit": args.limit},
        # the control: the same model loaded whole under the same limit must fail
        "llama-1.1b-eager": {"folder": None, "load": "eager", "budget": args.budget,
                             "group_size": 128, "samples": args.big_samples,
                             "seq_len": args.big_seq_len, "limit": args.limit, "expect_fail": True},
    }
    out = []
    for name in args.cases.split(","):
        case = {**common, **all_cases[name], "name": name}
        if case["folder"] is None:
            case["folder"] = str(write_synthetic(args.work_dir / "llama-1.1b-random"))
        out.append(case)
    return out


def gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def table(rows: list[dict]) -> str:
    head = ("| case | params | float weights GiB | quantized model GiB | activations/set MiB | "
            "budget | limit GiB | RSS after import GiB | RSS after load GiB | peak RSS GiB | "
            "peak CUDA GiB | seconds |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        if "error" in r:
            error = r["error"].split(":")[0] + (": cannot allocate memory" if "allocate" in r["error"]
                                                 else ": " + r["error"][:60])
            lines.append(f"| {r['case']} ({r['load']}) | | | | | | {gib(r['data_limit_bytes'])} | | "
                         f"| fails at load, {error} | | |")
            continue
        lines.append(
            f"| {r['case']} ({r['load']}) | {r['params'] / 1e6:.0f}M | {gib(r['float_weights_bytes'])} | "
            f"{gib(r['quantized_model_bytes'])} | "
            f"{r['activation_set_bytes'] / 2**20:.1f} | {r['activation_budget'] or 'none'} | "
            f"{gib(r['data_limit_bytes'])} | {gib(r['rss_after_import'])} | "
            f"{gib(r['rss_after_load'])} | {gib(r['peak_rss'])} | "
            f"{gib(r['peak_cuda'])} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="smollm2-eager,smollm2-lazy,llama-1.1b,llama-1.1b-eager")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--big-samples", type=int, default=4)
    p.add_argument("--big-seq-len", type=int, default=64)
    p.add_argument("--budget", default="1MiB", help="activation budget of the 1.1B case")
    p.add_argument("--limit", type=float, default=2.5, help="GiB of private memory the 1.1B case "
                   "may use (RLIMIT_DATA); its float32 weights are 4.4 GB")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/normtweak-memory"))
    p.add_argument("--output", type=Path, default=Path("results/memory.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(json.loads(args.child))))
        return {}
    args.limit = int(args.limit * 2**30)
    rows = []
    for case in cases(args):
        print(f"running {case['name']} ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(case)], check=False,
                              capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
        if proc.returncode != 0:
            raise SystemExit(f"{case['name']} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print("\n" + text)
    payload = {"command": "python " + shlex.join(sys.argv), "rows": rows, "table": text}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2))
    args.output.with_suffix(".md").write_text(text + "\n")
    print(f"\nwrote {args.output} and {args.output.with_suffix('.md')}")
    return payload


if __name__ == "__main__":
    main()
