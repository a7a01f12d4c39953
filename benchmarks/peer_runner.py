"""Run ONE peer quantizer (llm-compressor GPTQ or AutoRound) on SmolLM2 and score it.

Runs inside the peer's own virtual environment, with normtweak importable through
PYTHONPATH (never pip-installed there: that would repoint the shared editable install):

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 /work/venv-llmc/bin/python benchmarks/peer_runner.py \\
        --peer llmc --bits 4 --group-size 64 --calib data/peers_calib.safetensors \\
        --output results/peers_runs/x.json --save-dir /work/peer-models/x

benchmarks/peers.py builds the calibration file and calls this script; use that.

Calibration: the token ids in the safetensors file (tensor "input_ids", [n, seq_len]),
the same ids for every method (AutoRound's default calibration set needs the hub).
Quantization is integer weights (bits, group size; -1 = per-channel; asymmetric unless
--sym) on every Linear but the LM head, as in the peers' own defaults. --seed seeds torch
before the peer runs and is AutoRound's own seed. The quantized model is scored in
float32 with normtweak.evaluate.perplexity on the validation and test splits (first
--max-windows windows of --window tokens), then saved in the peer's export format.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import PEAK_RSS, cpu, peak_rss_mb, peak_rss_reset, revision  # noqa: E402


def read_calibration(path: str) -> torch.Tensor:
    """[n, seq_len] int64 token ids from a safetensors file written by benchmarks/peers.py."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist (benchmarks/peers.py writes it)")
    ids = load_file(path)["input_ids"]
    if ids.ndim != 2:
        raise ValueError(f"{path}: input_ids must be [n, seq_len], got {tuple(ids.shape)}")
    return ids.to(torch.int64)


# --- llm-compressor ----------------------------------------------------------------------


def run_llmc(model, tokenizer, ids: torch.Tensor, args) -> dict:
    """oneshot + GPTQModifier (its defaults but the scheme); returns what was used."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier

    strategy = "channel" if args.group_size == -1 else "group"
    weights = QuantizationArgs(num_bits=args.bits, type="int", symmetric=args.sym, strategy=strategy,
                               group_size=None if args.group_size == -1 else args.group_size)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    kwargs = {} if args.actorder == "default" else {
        "actorder": None if args.actorder == "none" else args.actorder}
    modifier = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"], **kwargs)
    data = Dataset.from_dict({"input_ids": ids.tolist(),
                              "attention_mask": torch.ones_like(ids).tolist()})
    oneshot(model=model, tokenizer=tokenizer, dataset=data, recipe=modifier,
            num_calibration_samples=ids.shape[0], max_seq_length=ids.shape[1],
            shuffle_calibration_samples=False, batch_size=args.llmc_batch_size)
    return {"actorder": str(modifier.actorder), "dampening_frac": modifier.dampening_frac,
            "block_size": modifier.block_size, "quant_dtype": str(model.dtype),
            "calibration_batch_size": args.llmc_batch_size, "symmetric": weights.symmetric}


def save_llmc(model, tokenizer, folder: Path) -> str:
    model.save_pretrained(folder, save_compressed=True)
    tokenizer.save_pretrained(folder)
    return "compressed-tensors"


# --- AutoRound ---------------------------------------------------------------------------


def run_autoround(model, tokenizer, ids: torch.Tensor, args):
    """AutoRound (iters=0: its RTN mode); its defaults but scheme, data, batch, seed and lr."""
    from auto_round import AutoRound

    batch = args.batch_size  # AutoRound's default: 8
    dataset = [ids[i : i + batch] for i in range(0, ids.shape[0], batch)]
    kwargs = {"lr": args.lr} if args.lr is not None else {}
    if args.disable_opt_rtn:
        kwargs["disable_opt_rtn"] = True  # plain RTN (iters=0 defaults to its optimized RTN)
    if args.no_amp:
        kwargs["amp"] = False  # train in float32 (its CPU default autocasts to bfloat16)
    ar = AutoRound(model, tokenizer, bits=args.bits, group_size=args.group_size, sym=args.sym,
                   dataset=dataset, nsamples=ids.shape[0], seqlen=ids.shape[1],
                   batch_size=batch, iters=args.iters, device_map="cpu", seed=args.seed,
                   **kwargs)
    ar.quantize()
    qmodel = ar.model
    amp_dtype = getattr(ar, "amp_dtype", None)
    info = {"iters": args.iters, "lr": args.lr if args.lr is not None else "default",
            "sym": args.sym, "seed": args.seed, "requested_batch_size": batch,
            "quant_dtype": str(amp_dtype if amp_dtype is not None else qmodel.dtype),
            "model_dtype_after": str(qmodel.dtype)}
    config = getattr(ar, "quantize_config", None)
    info["algorithm_config"] = type(config).__name__ if config is not None else None
    for name in ("disable_opt_rtn", "enable_minmax_tuning", "minmax_lr", "lr", "nblocks",
                 "enable_quanted_input", "batch_size", "gradient_accumulate_steps", "sym",
                 "seed", "iters", "nsamples", "seqlen"):
        for owner in (config, ar):
            value = getattr(owner, name, None)
            if isinstance(value, (bool, int, float, str)):
                info.setdefault(name, value)
    # what AutoRound actually used (its calibration context holds batch, samples, length)
    context = getattr(ar, "calibration_context", None)
    for name in ("batch_size", "nsamples", "seqlen"):
        value = getattr(context, name, None)
        if isinstance(value, int):
            info[f"used_{name}"] = value
    if isinstance(getattr(config, "lr", None), float):
        info["used_lr"] = config.lr
    info["amp"] = getattr(ar, "amp", None)
    info["enable_torch_compile"] = getattr(ar, "enable_torch_compile", None)
    return ar, qmodel, info


def save_autoround(ar, tokenizer, folder: Path) -> str:
    last = None
    for fmt in ("auto_gptq", "auto_round"):
        try:
            ar.save_quantized(str(folder), format=fmt, inplace=True)
            return fmt
        except Exception as err:  # noqa: BLE001 - fall back to AutoRound's own format, say why
            last = err
            print(f"save in {fmt} failed: {err!r}", flush=True)
    raise RuntimeError(f"AutoRound could not export the model: {last!r}")


# --- main --------------------------------------------------------------------------------


def evaluate(model, tokenizer, args) -> dict:
    from normtweak.evaluate.perplexity import split_perplexity

    out = {}
    for split in ("validation", "test"):
        t = time.perf_counter()
        with torch.no_grad():
            r = split_perplexity(model, tokenizer, args.text, split, window=args.window,
                                 max_windows=args.max_windows or None)
        out[split] = {"ppl": r.ppl, "tokens": r.tokens, "windows": r.windows,
                      "eval_s": time.perf_counter() - t}
        print(f"{split}: ppl {r.ppl:.3f} ({out[split]['eval_s']:.0f} s)", flush=True)
    return out


def write_result(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "auto-round", "llmcompressor", "compressed-tensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer", choices=["llmc", "autoround", "float"], required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64, help="-1 = per-channel")
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--sym", dest="sym", action="store_true",
                     help="symmetric weights (AutoRound's own default)")
    sym.add_argument("--asym", dest="sym", action="store_false",
                     help="asymmetric weights (the default here, as in the earlier runs)")
    p.set_defaults(sym=False)
    p.add_argument("--actorder", default="default", help="llmc: default|none|static|group")
    # oneshot's default batch is 1 sample; 8 gives the same Hessians (equal-length windows,
    # no padding) with far less per-call overhead on a CPU.
    p.add_argument("--llmc-batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=0, help="AutoRound iterations (0 = RTN mode)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="AutoRound calibration batch size (its default 8)")
    p.add_argument("--disable-opt-rtn", action="store_true", help="AutoRound: plain RTN at iters=0")
    p.add_argument("--lr", type=float, default=None, help="AutoRound lr (default: its own)")
    p.add_argument("--no-amp", action="store_true",
                   help="AutoRound: float32 training instead of bfloat16 autocast")
    p.add_argument("--calib", help="safetensors file with input_ids [n, seq_len]")
    p.add_argument("--text", default="wikipedia")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--max-windows", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42,
                   help="torch's seed before the peer runs; AutoRound's seed (its default 42)")
    p.add_argument("--save-dir", help="export the quantized model here (must not exist)")
    p.add_argument("--output", required=True, help="JSON result file")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if args.peer != "float" and not args.calib:
        p.error("--calib is required for a peer run")
    if args.save_dir and Path(args.save_dir).exists() and any(Path(args.save_dir).iterdir()):
        p.error(f"--save-dir {args.save_dir} exists and is not empty; remove it or pick another")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the peers must not reach for the hub
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from normtweak.assets import resolve_model
    from normtweak.loading.float import load_model

    model, tokenizer = load_model(args.model)
    # Peers re-read the config from name_or_path: point it at the local folder, not a hub id.
    model.config.name_or_path = str(Path(resolve_model(args.model)).resolve())
    result = {"args": vars(args), "argv": sys.argv, "versions": versions(),
              "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "revision": revision(),
              "cpu": cpu()}
    reset = peak_rss_reset()
    t, c = time.perf_counter(), time.process_time()
    ar = None
    if args.peer == "llmc":
        result["peer_settings"] = run_llmc(model, tokenizer, read_calibration(args.calib), args)
        qmodel = model
    elif args.peer == "autoround":
        ar, qmodel, result["peer_settings"] = run_autoround(model, tokenizer,
                                                            read_calibration(args.calib), args)
    else:
        qmodel = model
    result["quantize_s"], result["quantize_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    result["peak_rss_mb"] = peak_rss_mb()
    result["peak_rss_note"] = PEAK_RSS if reset else "ru_maxrss (no reset)"
    print(f"quantized in {result['quantize_s']:.0f} s, peak RSS {result['peak_rss_mb']:.0f} MB",
          flush=True)
    # Score every method in float32; a copy, so that the peer exports what it quantized.
    scored = copy.deepcopy(qmodel).float().eval() if ar is not None else qmodel.float().eval()
    result["eval"] = evaluate(scored, tokenizer, args)
    del scored
    write_result(args.output, result)  # the numbers are safe before the export is tried
    if args.save_dir and args.peer != "float":
        folder = Path(args.save_dir)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        try:
            if args.peer == "llmc":
                result["export_format"] = save_llmc(qmodel, tokenizer, folder)
            else:
                result["export_format"] = save_autoround(ar, tokenizer, folder)
            result["export_dir"] = str(folder)
        except Exception as err:  # noqa: BLE001 - keep the measured run, record the failure
            result["export_error"] = repr(err)
            print(f"export failed: {err!r}", flush=True)
        result["export_s"] = time.perf_counter() - t
    write_result(args.output, result)
    print(f"wrote {args.output}", flush=True)
    return result


if __name__ == "__main__":
    main()
