"""normtweak beside its peers (llm-compressor GPTQ, AutoRound) on the same model, data and eval.

    OMP_NUM_THREADS=1 python benchmarks/peers.py --threads 1                # everything installed
    OMP_NUM_THREADS=1 python benchmarks/peers.py --only-peers --peers llmc-gptq --configs 4:64
    OMP_NUM_THREADS=1 python benchmarks/peers.py --text austen --configs 4:64
    OMP_NUM_THREADS=1 python benchmarks/peers.py --only-peers --peers autoround-200 --configs 4:64:sym

Every method quantizes SmolLM2 from the same calibration token ids (calib.text.
calibration_from_text(tokenizer, TEXT, N, LEN, seed), written once to a safetensors
file) and is scored with normtweak.evaluate.perplexity in float32 on the validation and
test splits (first --max-windows non-overlapping --window-token windows of each). The
peers run in their own virtual environments through benchmarks/peer_runner.py (their
pins conflict with ours; see "How the peers run" in docs/results.md); a peer whose environment is
missing is skipped, and the table says so. normtweak's variants run in this process
(`normtweak_variants`). Each run's JSON is cached in results/peers_runs/ under a name
made of its settings, so a rerun skips finished runs (--fresh reruns them); a normtweak run's
JSON also holds each block's tweak loss before and after training (`blocks`). A long normtweak
run can be resumed: with --checkpoints-dir DIR its tweak writes each finished block to
DIR/<the run's name>/ and a rerun after an interruption continues from there (the result is
identical to an uninterrupted run; its times then cover the last process only, and the run's
`resumed_blocks` says how many blocks came from the checkpoints).

--configs items are bits:group_size[:sym|asym] (asymmetric when left out, the scheme every
earlier run used: their names carry no scheme; symmetric runs' names end in "sym").
--seed picks the calibration windows and seeds every method: AutoRound's own seed, torch
in the peers' runner, normtweak's tweak; a seed other than 0 is in every file name.

Columns: val/test perplexity, gap recovered on test = (RTN - method) / (RTN - float) with
normtweak's RTN of the same config, quantization wall time, peak resident memory of the
process that quantized (model, calibration and activations included).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import PEAK_RSS, cpu, peak_rss_mb, peak_rss_reset, revision  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "benchmarks" / "peer_runner.py"

# name -> (peer environment, runner arguments). Defaults are the peers' own, but the
# scheme (--configs; asymmetric unless :sym), the seed (--seed) and, for AutoRound-50, the lr
# the issue measured with. AutoRound's amp (its default True) autocasts to bfloat16 where
# the CPU has bf16 (avx512_bf16) and runs float32 where it has not: the run's quant dtype
# column says which.
PEERS = {
    "llmc-gptq": ("llmc", []),  # GPTQModifier defaults: actorder "static"
    "llmc-gptq-noact": ("llmc", ["--actorder", "none"]),
    "autoround-rtn": ("autoround", ["--iters", "0"]),  # its default: optimized RTN
    "autoround-rtn-plain": ("autoround", ["--iters", "0", "--disable-opt-rtn"]),
    "autoround-50": ("autoround", ["--iters", "50", "--lr", "5e-3"]),
    # AutoRound's default recipe: 200 iterations, lr 1/iters = 5e-3, batch 8, its default amp
    "autoround-200": ("autoround", ["--iters", "200", "--batch-size", "8"]),
    # its "fast" recipe for 512-token calibration: 200 iterations at batch 4
    "autoround-fast": ("autoround", ["--iters", "200", "--batch-size", "4"]),
    # AutoRound-50 in float32 whatever the CPU (amp=False): where the CPU has bf16, AutoRound
    # autocasts to it by default
    "autoround-50-fp32": ("autoround", ["--iters", "50", "--lr", "5e-3", "--no-amp"]),
}
PEER_PACKAGES = {"llmc": "llmcompressor", "autoround": "auto_round"}
DEFAULT_PEERS = "llmc-gptq,autoround-rtn,autoround-50"


# The tweak of "normtweak-gptq+tweak" as its cached runs were made (TweakSpec()'s defaults
# then), pinned so that the name keeps its meaning whatever TweakSpec's defaults become.
GPTQ_TWEAK = {"lr": 1e-4, "scale": 5.0, "iters": 1, "batch_size": 1, "loss": "dist",
              "target": "quantized_input", "quant_params": "none", "keep_better": True}


def normtweak_variants(args) -> list[tuple]:
    """(name, QuantSpec, TweakSpec or None) for every normtweak row of one config.

    args.bits / args.group_size / args.symmetric (False when missing): the config. The
    first entry must be plain RTN (the reference of the gap-recovered column). Each variant
    takes QuantSpec's default grid: at a symmetric config the full-range grid (normtweak
    0.2's default). There each variant also has a "-gptqgrid" twin on GPTQ's symmetric grid
    (`full_range=False`, the default before the switch: every symmetric run made before it
    carries that name).
    """
    from dataclasses import replace

    from normtweak.config import QuantSpec, TweakSpec

    def q(method: str, **kw) -> QuantSpec:
        return QuantSpec(bits=args.bits, group_size=args.group_size,
                         symmetric=bool(getattr(args, "symmetric", False)), method=method, **kw)

    gptq = q("gptq", act_order=True, static_groups=True)
    variants = [
        ("normtweak-rtn", q("rtn"), None),
        ("normtweak-gptq", gptq, None),
        ("normtweak-gptq+tweak", gptq, TweakSpec(**GPTQ_TWEAK)),
        # the joint preset on RTN: 3 passes x 16 batches of 8 = 48 steps per block
        ("normtweak-default", q("rtn"), TweakSpec.preset("joint")),
        # 13 passes x 16 batches of 8 = 208 steps per block (AutoRound-200: 200 x batch 8)
        ("normtweak-joint-equal-compute", q("rtn"), TweakSpec.preset("joint", iters=13)),
        # norms frozen (lr 0): only the linears' clipping and rounding train
        ("normtweak-joint-frozen-norms", q("rtn"), TweakSpec.preset("joint", lr=0.0)),
        # the training steps' forward under bf16 autocast (AutoRound's default on this CPU)
        ("normtweak-default-bf16", q("rtn"), TweakSpec.preset("joint", train_dtype="bfloat16")),
    ]
    if getattr(args, "symmetric", False):
        variants += [(name + GPTQ_GRID, replace(quant, full_range=False), tweak)
                     for name, quant, tweak in variants]
    return variants


# The suffix of a variant on GPTQ's symmetric grid (normtweak_variants' twins).
GPTQ_GRID = "-gptqgrid"


# --- small helpers -----------------------------------------------------------------------


SCHEMES = {"sym": True, "asym": False}


def parse_configs(text: str) -> list[tuple[int, int, bool]]:
    """'4:64:sym,3:64,4:-1:asym' -> [(bits, group_size, symmetric), ...] (-1 = per-channel;
    asymmetric when the scheme is left out)."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in SCHEMES):
                raise ValueError
            bits, group = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(f"--configs items are bits:group_size[:sym|asym] (e.g. 4:64, "
                             f"4:-1, 4:64:sym), got {item!r}") from None
        out.append((bits, group, SCHEMES[parts[2]] if len(parts) == 3 else False))
    return out


def config_label(bits: int, group: int, symmetric: bool = False) -> str:
    return (f"W{bits} " + ("per-channel" if group == -1 else f"g{group}")
            + (" sym" if symmetric else " asym"))


def config_tag(bits: int, group: int, symmetric: bool = False) -> str:
    """w4g64, w4pc (asymmetric: the names every earlier run has), w4g64sym (symmetric)."""
    return f"w{bits}" + ("pc" if group == -1 else f"g{group}") + ("sym" if symmetric else "")


def run_tag(args, method: str, bits: int | None, group: int | None,
            symmetric: bool = False, specs: tuple = ()) -> str:
    """File name of a run's JSON: the model, every setting that changes its numbers or its
    timing, and for normtweak rows a hash of the resolved specs (every field). 'pd':
    perplexity per document (runs before it scored the documents joined into one stream).
    The code revision is recorded in the run; the table marks rows of another revision."""
    import hashlib

    cfg = "float" if bits is None else config_tag(bits, group, symmetric)
    model = Path(str(args.model).rstrip("/")).name
    tag = (f"{model}_{args.text}_{method}_{cfg}_c{args.calib_samples}x{args.calib_len}"
           f"s{args.seed}_e{args.max_windows}x{args.window}pd_t{args.threads}")
    if specs:
        blob = json.dumps([hashed_fields(s) for s in specs], sort_keys=True)
        tag += "_" + hashlib.sha256(blob.encode()).hexdigest()[:8]
    return tag


def hashed_fields(spec) -> dict | None:
    """A spec's fields as its run's name hashes them. Fields added after runs were cached are
    left out at the value every earlier run had (QuantSpec's RECORDED_BEFORE), so an earlier
    run keeps its name."""
    from normtweak.config.quant import RECORDED_BEFORE

    if spec is None:
        return None
    return {k: v for k, v in spec.as_dict().items()
            if not (k in RECORDED_BEFORE and v == RECORDED_BEFORE[k])}


def model_dir_name(args, method: str, bits: int, group: int, symmetric: bool = False) -> str:
    """Folder of a peer's exported checkpoint under --models-dir (seed 0: no seed in the name,
    as the earlier folders have it)."""
    seed = f"s{args.seed}" if args.seed else ""
    return (f"{args.text}-{method}-{config_tag(bits, group, symmetric)}-"
            f"{args.calib_samples}x{args.calib_len}{seed}")


def seed_mismatch(run: dict, args) -> str | None:
    """A note when a cached peer run was tuned with another seed than --seed (the AutoRound
    runs made before --seed reached AutoRound used its default 42); None when the seed
    matches or cannot matter (llm-compressor, AutoRound's RTN mode: no randomness)."""
    a = run.get("args") or {}
    if a.get("peer") != "autoround" or not a.get("iters") or a.get("seed") in (None, args.seed):
        return None
    return f"AutoRound seed {a['seed']}"


def peer_python(env: str, args) -> Path | None:
    """The interpreter of a peer's environment, or None when the peer is not installed there."""
    venv = Path(getattr(args, f"venv_{env}"))
    for python in (venv / "bin" / "python", Path(sys.executable)):
        if python.is_file() and subprocess.run(
            [str(python), "-c", f"import importlib.util as u, sys; "
                                f"sys.exit(u.find_spec({PEER_PACKAGES[env]!r}) is None)"],
            capture_output=True).returncode == 0:
            return python
    return None


def calibration_file(args, tokenizer) -> Path:
    """Write (once) the calibration token ids every method uses; return the file."""
    from safetensors.torch import save_file

    from normtweak.calib.text import calibration_from_text

    path = ROOT / "data" / f"peers_calib_{args.text}_{args.calib_samples}x{args.calib_len}_s{args.seed}.safetensors"
    if not path.is_file():
        ids = calibration_from_text(tokenizer, args.text, args.calib_samples, args.calib_len,
                                    seed=args.seed).input_ids
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"input_ids": ids.contiguous()}, str(tmp))
        os.replace(tmp, path)
    return path


def cached(path: Path, args) -> dict | None:
    if args.fresh or not path.is_file():
        return None
    return json.loads(path.read_text())


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# --- runs --------------------------------------------------------------------------------


def evaluate(model, tokenizer, texts: dict, args) -> dict:
    from normtweak.evaluate.perplexity import perplexity

    out = {}
    for split, text in texts.items():
        t = time.perf_counter()
        with torch.no_grad():
            r = perplexity(model, tokenizer, text, window=args.window,
                           max_windows=args.max_windows or None)
        out[split] = {"ppl": r.ppl, "tokens": r.tokens, "windows": r.windows,
                      "eval_s": time.perf_counter() - t}
    return out


def run_normtweak(name, quant, tweak, model, tokenizer, ids, texts, args,
                  checkpoint_dir: Path | None = None) -> dict:
    """Quantize (and tweak) a copy of the float model in this process and score it.

    checkpoint_dir: a tweak writes each finished block there and, when the folder holds an
    interrupted run's checkpoints, resumes it (then its times cover this process only, and
    the run records how many blocks it restored)."""
    from normtweak.config import RunSpec
    from normtweak.quant.model import quantize_model
    from normtweak.tweak.pipeline import tweak_model

    qmodel = copy.deepcopy(model)
    reset = peak_rss_reset()
    t, c = time.perf_counter(), time.process_time()
    fresh = getattr(args, "fresh", False)  # --fresh: discard an interrupted run's blocks
    resume = checkpoint_dir is not None and (checkpoint_dir / "run.json").is_file() and not fresh
    run = RunSpec(seed=args.seed, progress=False, resume=resume, overwrite=fresh,
                  checkpoint_dir=None if tweak is None else checkpoint_dir)
    resumed_blocks, blocks = 0, None
    if tweak is None:
        quantize_model(qmodel, quant, calibration=ids if quant.method == "gptq" else None, run=run,
                       batch_size=8)
    else:
        result = tweak_model(qmodel, ids, quant, tweak, run)
        resumed_blocks = sum(b.resumed for b in result.blocks)
        blocks = block_records(result.blocks)
    quantize_s, cpu_s = time.perf_counter() - t, time.process_time() - c
    peak = peak_rss_mb()
    return {"method": name, "quant": quant.as_dict(), "resumed_blocks": resumed_blocks,
            "tweak": tweak.as_dict() if tweak is not None else None, "quantize_s": quantize_s,
            "quantize_cpu_s": cpu_s, "revision": revision(), "cpu": cpu(),
            "peak_rss_mb": peak, "peak_rss_note": PEAK_RSS if reset else "ru_maxrss (no reset)",
            "eval": evaluate(qmodel, tokenizer, texts, args),
            "peer_settings": {"quant_dtype": "torch.float32"}, "seed": args.seed,
            "torch_threads": torch.get_num_threads(),
            **({"blocks": blocks} if blocks is not None else {})}


def block_records(results) -> list[dict]:
    """Each tweaked block's loss before and after its training (the tweak's own loss, e.g.
    rel_mse), whether its start was kept and its seconds; a block restored from a checkpoint
    has no losses (None). Where a config is lost, these say in which blocks."""
    def num(x: float):
        return None if math.isnan(x) else x  # null in the JSON
    return [{"index": b.index, "loss_before": num(b.loss_before), "loss_after": num(b.loss_after),
             "kept_start": b.kept_start, "resumed": b.resumed, "seconds": b.seconds}
            for b in results]


def peer_command(name: str, bits: int, group: int, symmetric: bool, python: Path, calib: Path,
                 out: Path, args) -> list[str]:
    """The runner's command line for one peer run (without --save-dir)."""
    env_name, extra = PEERS[name]
    return [str(python), str(RUNNER), "--peer", env_name, "--bits", str(bits), "--group-size",
            str(group), "--sym" if symmetric else "--asym", "--seed", str(args.seed),
            "--calib", str(calib), "--text", args.text, "--window", str(args.window),
            "--max-windows", str(args.max_windows), "--threads", str(args.threads),
            "--output", str(out), *extra]


def run_peer(name: str, bits: int, group: int, symmetric: bool, python: Path, calib: Path,
             out: Path, args) -> dict | None:
    """One peer run through its environment's interpreter; None when it failed."""
    cmd = peer_command(name, bits, group, symmetric, python, calib, out, args)
    save = Path(args.models_dir) / model_dir_name(args, name, bits, group, symmetric)
    if save.exists() and any(save.iterdir()):
        print(f"  {save} exists: this run does not export its model again", flush=True)
    else:
        cmd += ["--save-dir", str(save)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    print("  $ " + shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=ROOT)
    if proc.returncode != 0 or not out.is_file():
        print(f"  {name} {config_label(bits, group, symmetric)} FAILED (exit {proc.returncode})",
              flush=True)
        return None
    result = json.loads(out.read_text())
    result["method"] = name
    write_json_atomic(out, result)
    return result


# --- table -------------------------------------------------------------------------------


def table_rows(float_run: dict, runs: list[dict]) -> list[dict]:
    """One row per run: val/test ppl, gap recovered on test vs normtweak RTN of its config."""
    from normtweak.evaluate.report import gap_recovered

    f_test = float_run["eval"]["test"]["ppl"]
    rtn = {r["config"]: r["eval"]["test"]["ppl"] for r in runs if r["method"] == "normtweak-rtn"}
    rows = [{"method": "float", "config": "-", "val_ppl": float_run["eval"]["validation"]["ppl"],
             "test_ppl": f_test, "gap_recovered_%": None, "quantize_s": None,
             "peak_rss_mb": None, "dtype": "float32"}]
    for r in runs:
        test = r["eval"]["test"]["ppl"]
        ref = rtn.get(r["config"])
        gap = None if ref is None or r["method"] == "normtweak-rtn" else gap_recovered(f_test, ref, test)
        note = r.get("seed_note")
        rows.append({"method": r["method"] + (f" ({note})" if note else ""), "config": r["config"],
                     "val_ppl": r["eval"]["validation"]["ppl"], "test_ppl": test,
                     "gap_recovered_%": gap, "quantize_s": r["quantize_s"],
                     "peak_rss_mb": r["peak_rss_mb"],
                     "dtype": r.get("peer_settings", {}).get("quant_dtype", "?").replace("torch.", "")})
    return rows


COLUMNS = [("method", "method"), ("config", "config"), ("val_ppl", "val ppl"),
           ("test_ppl", "test ppl"), ("gap_recovered_%", "gap recovered (test) %"),
           ("quantize_s", "quantize s"), ("peak_rss_mb", "peak MB"), ("dtype", "quant dtype")]


def markdown(rows: list[dict]) -> str:
    def cell(v, key):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.0f}" if key in ("quantize_s", "peak_rss_mb") else (
                f"{v:.1f}" if key == "gap_recovered_%" else f"{v:.2f}")
        return str(v)

    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(k), k) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--text", default="wikipedia", choices=["wikipedia", "austen"])
    p.add_argument("--configs", default="4:64,3:64,4:-1",
                   help="bits:group_size[:sym|asym],... (-1 = per-channel; asym when left out)")
    p.add_argument("--peers", default=DEFAULT_PEERS, help=f"comma list of {','.join(PEERS)}, or none")
    p.add_argument("--only-peers", action="store_true", help="run no normtweak variant (cached ones still join the table)")
    p.add_argument("--only-normtweak", action="store_true", help="no peers")
    p.add_argument("--variants", default="",
                   help="comma list of normtweak variant names to run (default: all of "
                        "normtweak_variants but the -gptqgrid twins)")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--seed", type=int, default=0,
                   help="calibration windows' seed, also every method's (AutoRound's, the tweak's)")
    p.add_argument("--max-windows", type=int, default=8, help="windows per split; 0 = all")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="torch threads, also OMP_NUM_THREADS of the peers")
    p.add_argument("--venv-llmc", default=str(ROOT.parent / "venv-llmc"))
    p.add_argument("--venv-autoround", default=str(ROOT.parent / "venv-autoround"))
    p.add_argument("--models-dir", default=str(ROOT.parent / "peer-models"),
                   help="where the peers' exported checkpoints go (outside the repo)")
    p.add_argument("--runs-dir", default=str(ROOT / "results" / "peers_runs"))
    p.add_argument("--checkpoints-dir", default=None,
                   help="normtweak tweaks write per-block checkpoints to a folder per run here "
                        "and resume an interrupted run from it (its times then cover the last "
                        "process only)")
    p.add_argument("--fresh", action="store_true", help="rerun runs that have a cached JSON")
    p.add_argument("--cached-only", action="store_true",
                   help="run nothing: the table of the cached runs (float is run if missing)")
    p.add_argument("--output", default=None, help="default results/peers_<text>.json")
    args = p.parse_args(argv)
    args.config_list = parse_configs(args.configs)
    args.variants = [v for v in args.variants.split(",") if v]
    names = [n for n, _, _ in normtweak_variants(argparse.Namespace(bits=4, group_size=64,
                                                                    symmetric=True))]
    if [v for v in args.variants if v not in names]:
        p.error(f"unknown variant(s) {[v for v in args.variants if v not in names]}; "
                f"choose from {names}")
    args.peer_list = [] if args.peers in ("", "none") or args.only_normtweak else args.peers.split(",")
    unknown = [n for n in args.peer_list if n not in PEERS]
    if unknown:
        p.error(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")
    if args.fresh and args.cached_only:
        p.error("--fresh and --cached-only exclude each other")
    if args.only_peers and args.only_normtweak:
        p.error("--only-peers and --only-normtweak exclude each other")
    args.output = args.output or str(ROOT / "results" / f"peers_{args.text}.json")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    command = "python benchmarks/peers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    from normtweak.evaluate.taskdata import corpus_documents
    from normtweak.loading.float import load_model

    model, tokenizer = load_model(args.model)
    texts = {s: corpus_documents(args.text, s) for s in ("validation", "test")}  # per document
    calib = calibration_file(args, tokenizer)
    from safetensors.torch import load_file

    ids = load_file(str(calib))["input_ids"]
    runs_dir = Path(args.runs_dir)
    skipped = []

    path = runs_dir / f"{run_tag(args, 'float', None, None)}.json"
    float_run = cached(path, args)
    if float_run is None:
        float_run = {"method": "float", "config": "-", "eval": evaluate(model, tokenizer, texts, args)}
        write_json_atomic(path, float_run)
    print(f"float: val {float_run['eval']['validation']['ppl']:.2f} "
          f"test {float_run['eval']['test']['ppl']:.2f}", flush=True)

    runs = []
    pythons = {env: peer_python(env, args) for env in {PEERS[n][0] for n in args.peer_list}}
    for bits, group, sym in args.config_list:
        args.bits, args.group_size, args.symmetric = bits, group, sym
        label = config_label(bits, group, sym)
        for name in args.peer_list:
            python = pythons[PEERS[name][0]]
            path = runs_dir / f"{run_tag(args, name, bits, group, sym)}.json"
            run = cached(path, args)
            if run is None and args.cached_only:
                continue
            if run is None and python is None:
                skipped.append(f"{name}: {PEER_PACKAGES[PEERS[name][0]]} is not installed in "
                               f"{getattr(args, 'venv_' + PEERS[name][0])} nor in this Python")
                continue
            if run is None:
                print(f"{name} {label} ...", flush=True)
                run = run_peer(name, bits, group, sym, python, calib, path, args)
                if run is None:
                    skipped.append(f"{name} {label}: failed (see its output)")
                    continue
            run["config"] = label
            note = seed_mismatch(run, args)
            if note:
                run["seed_note"] = note
                print(f"  cached {path.name} was tuned with {note}, not {args.seed} "
                      f"(--fresh reruns it)", flush=True)
            runs.append(run)

        for name, quant, tweak in normtweak_variants(args):
            if (name not in args.variants) if args.variants else name.endswith(GPTQ_GRID):
                continue
            path = runs_dir / f"{run_tag(args, name, bits, group, sym, (quant, tweak))}.json"
            run = cached(path, args)
            if run is None and (args.only_peers or args.cached_only):
                continue  # a cached normtweak run still joins the table (RTN: the gap's reference)
            if run is None:
                print(f"{name} {label} ...", flush=True)
                ckpt = (Path(args.checkpoints_dir) / path.stem
                        if args.checkpoints_dir and tweak is not None else None)
                run = run_normtweak(name, quant, tweak, model, tokenizer, ids, texts, args, ckpt)
                run["config"] = label
                write_json_atomic(path, run)
            runs.append(run)
    here = revision()
    for run in runs:  # a row another revision made says so
        if run.get("revision") and run["revision"] != here:
            run["method"] = f"{run['method']} (rev {run['revision']})"
    rows = table_rows(float_run, runs)
    table = markdown(rows)
    caption = (f"{args.model}; calibration {args.calib_samples} x {args.calib_len} tokens of "
               f"{args.text} train (seed {args.seed}), the same ids for every method; perplexity "
               f"on the first {args.max_windows or 'all'} {args.window}-token windows of {args.text} "
               f"validation / test; {args.threads} thread(s); gap recovered vs normtweak RTN")
    print("\n" + caption + "\n" + table)
    for s in sorted(set(skipped)):
        print(f"skipped: {s}")
    print(f"\nreproduce: OMP_NUM_THREADS={args.threads} {command}")
    result = {"command": command, "caption": caption, "rows": rows, "skipped": sorted(set(skipped)),
              "runs": runs, "float": float_run,
              "args": {k: v for k, v in vars(args).items()
                       if k not in ("bits", "group_size", "symmetric")}}
    write_json_atomic(Path(args.output), result)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
