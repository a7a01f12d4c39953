"""Data-parallel norm tweaking: SmolLM2 wall time with 1 and 2 CPU processes, and a 70B projection.

    python benchmarks/distributed.py                       # ~2 minutes on 2 idle cores
    python benchmarks/distributed.py --num-samples 128 --seq-len 512

1. The same tweak (RTN, same global batch) runs as one process (`python -m normtweak tweak
   --batch-size 2B`) and as two (`torchrun --standalone --nproc-per-node 2 -m normtweak tweak
   --batch-size B`), one thread each. Reported: wall time of the command (start, load,
   calibration, tweak, save) and the pipeline's own seconds (from the saved model's
   metadata), and how far the two models' norms are apart.
2. Costs per block, measured here on SmolLM2: the CPU's achieved rate on the token passes
   (FLOPs of the passes / the one-process run's seconds per block) and on GPTQ's column
   solve (timed on block 0).
3. Projection for Llama-3-70B (80 blocks of 855.6M parameters, hidden 8192) with the
   paper's 128 x 2048 calibration, on 1 and 8 GPUs: the token passes split over the
   ranks, GPTQ's solve repeated on every rank (not split), the Hessian all-reduce over
   NVLink, and the host<->GPU copies (the float block in, each rank's activations in and
   out once per pass; PCIe). The GPU's matmul rate is an assumption (--gpu-tflops: no GPU
   here); GPTQ's solve runs at the fraction of it measured on the CPU (solve rate / pass
   rate). --reuse recomputes the projection from the measurements already in --out.
Prints a table and writes results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Llama-3-70B: hidden 8192, intermediate 28672, 64/8 heads of 128, 80 blocks.
L70 = {"hidden": 8192, "blocks": 80, "linears": [(8192, 8192), (8192, 1024), (8192, 1024),
                                                  (8192, 8192), (8192, 28672), (8192, 28672),
                                                  (28672, 8192)]}  # (in, out)


def passes(method: str, iters: int) -> int:
    """Forward-pass equivalents per block: targets, [GPTQ inputs], loss before, iters x
    (forward + backward ~ 2 forwards), next inputs with the loss after."""
    return (4 if method == "gptq" else 3) + 2 * iters


def flops_per_token(linears, hidden: int, seq_len: int) -> float:
    """One block's forward FLOPs per token: 2 per weight, attention 4 x seq_len x hidden."""
    return 2 * sum(i * o for i, o in linears) + 4 * seq_len * hidden


def solve_flops(linears) -> float:
    """GPTQ's column solve: each column's error update touches out x in, for in columns."""
    return sum(2 * o * i * i for i, o in linears)


def tweak_command(procs: int, batch: int, args, save: Path) -> list[str]:
    launch = ([sys.executable, "-m", "normtweak"] if procs == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(procs), "-m", "normtweak"])
    return [*launch, "tweak", "--model", args.model, "--from-text", "wikipedia",
            "--num-samples", str(args.num_samples), "--seq-len", str(args.seq_len),
            "--nbits", "4", "--group-size", "64", "--iters", str(args.iters),
            "--batch-size", str(batch), "--save-dir", str(save)]


def timed_run(procs: int, args, tmp: Path) -> dict:
    save = tmp / f"procs{procs}"
    cmd = tweak_command(procs, args.batch_size * (2 // procs), args, save)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    qc = json.loads((save / "config.json").read_text())["quantization_config"]
    blocks = [b["seconds"] for b in qc["tweak_result"]["blocks"]]
    return {"processes": procs, "batch_per_process": args.batch_size * (2 // procs),
            "wall_s": wall, "tweak_s": qc["tweak_result"]["seconds"],
            "block_s_mean": sum(blocks) / len(blocks), "blocks": len(blocks),
            "command": " ".join(cmd[1:]), "saved": str(save)}


def norm_gap(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    sa, sb = (load_file(str(p / "model.safetensors")) for p in (a, b))
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa if "norm" in k)


def gptq_solve_seconds(model_ref: str) -> tuple[float, list]:
    """Seconds of GPTQ's solve for every linear of SmolLM2's block 0, and the linears' shapes."""
    import torch

    from normtweak import arch
    from normtweak.config import QuantSpec
    from normtweak.loading.float import load_model
    from normtweak.quant.gptq import gptq_quantize

    model, _ = load_model(model_ref)
    block = arch.get_adapter(model).get_blocks(model)[0]
    gen = torch.Generator().manual_seed(0)
    total, shapes = 0.0, []
    for _, lin in arch.block_linears(block):
        x = torch.randn(2048, lin.in_features, generator=gen)
        t0 = time.perf_counter()
        gptq_quantize(lin.weight, 2 / len(x) * x.t() @ x, QuantSpec(bits=4, group_size=64,
                                                                    symmetric=False, method="gptq"))
        total += time.perf_counter() - t0
        shapes.append((lin.in_features, lin.out_features))
    return total, shapes


def project(rate_pass: float, rate_solve: float, gpu_tflops: float, gpus: int, method: str,
            iters: int, samples: int = 128, seq_len: int = 2048, busbw_gbs: float = 300.0,
            pcie_gbs: float = 25.0) -> dict:
    """Seconds for Llama-3-70B on `gpus` GPUs (per block, and all 80 blocks)."""
    gpu = gpu_tflops * 1e12
    tokens = samples * seq_len
    token_s = passes(method, iters) * tokens * flops_per_token(L70["linears"], L70["hidden"],
                                                               seq_len) / gpu / gpus
    solve_rate = gpu * rate_solve / rate_pass  # the CPU's solve:matmul efficiency, on the GPU
    solve_s = solve_flops(L70["linears"]) / solve_rate if method == "gptq" else 0
    hessian_bytes = sum(4 * i * i for i, _ in L70["linears"])
    comm_s = 2 * (gpus - 1) / gpus * hessian_bytes / (busbw_gbs * 1e9) if method == "gptq" else 0
    weights = sum(4 * i * o for i, o in L70["linears"])
    acts = 2 * passes(method, iters) * tokens / gpus * L70["hidden"] * 4  # in and out, float32
    copy_s = (weights + acts) / (pcie_gbs * 1e9)
    block = token_s + solve_s + comm_s + copy_s
    return {"gpus": gpus, "method": method, "gpu_tflops": gpu_tflops, "token_passes_s": token_s,
            "gptq_solve_s": solve_s, "allreduce_s": comm_s, "host_copies_s": copy_s,
            "block_s": block,
            "total_h": block * L70["blocks"] / 3600}


def measure(args):
    """(CPU pass rate, CPU GPTQ solve rate in FLOP/s, the two runs, norm gap, solve seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = [timed_run(p, args, Path(tmp)) for p in (1, 2)]
        gap = norm_gap(Path(runs[0]["saved"]), Path(runs[1]["saved"]))
    solve_s, shapes = gptq_solve_seconds(args.model)
    tokens = args.num_samples * args.seq_len
    rate_pass = (passes("rtn", args.iters) * tokens
                 * flops_per_token(shapes, shapes[0][0], args.seq_len) / runs[0]["block_s_mean"])
    return rate_pass, solve_flops(shapes) / solve_s, runs, gap, solve_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=1, help="per process with 2 processes")
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--gpu-tflops", type=float, nargs="+", default=[50.0, 400.0],
                    help="assumed achieved GPU matmul rates (H100: ~50 float32, ~400 bf16)")
    ap.add_argument("--out", default=str(ROOT / "results" / "distributed.json"))
    ap.add_argument("--reuse", action="store_true", help="reuse the CPU measurements in --out")
    args = ap.parse_args()

    if args.reuse:
        old = json.loads(Path(args.out).read_text())
        runs, gap, solve_s = old["cpu_runs"], old["norm_max_abs_diff"], old["gptq_solve_block0_s"]
        rate_pass, rate_solve = old["cpu_rate_pass_flops"], old["cpu_rate_gptq_solve_flops"]
        measured_args, command = old["args"], old["command"]
        for key in ("num_samples", "seq_len", "batch_size", "iters"):
            setattr(args, key, measured_args[key])
    else:
        rate_pass, rate_solve, runs, gap, solve_s = measure(args)
        command = "python benchmarks/distributed.py " + " ".join(sys.argv[1:])
    projections = [project(rate_pass, rate_solve, r, g, m, args.iters)
                   for r in args.gpu_tflops for m in ("rtn", "gptq") for g in (1, 8)]

    print(f"SmolLM2 tweak, RTN W4 g64, {args.num_samples} x {args.seq_len} tokens, global batch "
          f"{2 * args.batch_size}, {args.iters} iteration(s), one thread per process")
    print(f"{'processes':>9} {'batch/proc':>10} {'wall s':>7} {'tweak s':>8} {'s/block':>8}")
    for r in runs:
        print(f"{r['processes']:>9} {r['batch_per_process']:>10} {r['wall_s']:>7.1f} "
              f"{r['tweak_s']:>8.1f} {r['block_s_mean']:>8.3f}")
    print(f"largest norm difference between the two models: {gap:.2e}")
    print(f"CPU achieved: token passes {rate_pass / 1e9:.2f} GFLOP/s, GPTQ solve "
          f"{rate_solve / 1e9:.2f} GFLOP/s ({solve_s:.2f} s for block 0)")
    print("\nLlama-3-70B, 128 x 2048 calibration, 80 blocks (projection)")
    print(f"{'method':>6} {'TFLOP/s':>7} {'GPUs':>4} {'passes s':>9} {'solve s':>8} "
          f"{'comm s':>7} {'copies s':>8} {'s/block':>8} {'hours':>6}")
    for p in projections:
        print(f"{p['method']:>6} {p['gpu_tflops']:>7g} {p['gpus']:>4} {p['token_passes_s']:>9.1f} "
              f"{p['gptq_solve_s']:>8.1f} {p['allreduce_s']:>7.2f} {p['host_copies_s']:>8.2f} "
              f"{p['block_s']:>8.1f} {p['total_h']:>6.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "args": vars(args), "command": command,
        "cpu_runs": runs, "norm_max_abs_diff": gap, "cpu_rate_pass_flops": rate_pass,
        "cpu_rate_gptq_solve_flops": rate_solve, "gptq_solve_block0_s": solve_s,
        "projection_70b": projections,
        "load_average": old["load_average"] if args.reuse else os.getloadavg()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
