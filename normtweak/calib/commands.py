"""`normtweak generate-data`: write a calibration set (self-generated or from text)."""

from __future__ import annotations

from pathlib import Path

import click

from normtweak import options as o
from normtweak.config import DEFAULT_SEQ_LEN


def open_calibration(path: str | Path):
    """Read a calibration set before any model is loaded, with errors a user can act on."""
    from normtweak.calib.store import CalibrationSet

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such file")
    if path.is_dir():
        raise ValueError(f"--data {path} is a folder; give a calibration .safetensors file")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix in (".txt", ".jsonl", ".json", ".md") or not _safetensors_header(head, path):
        raise ValueError(f"--data {path} is not a calibration set (a .safetensors file from "
                         f"`normtweak generate-data`); to cut calibration windows from a text "
                         f"file use --from-text {path}")
    return CalibrationSet.load(path)


def check_corpora(*names) -> None:
    """A mistyped corpus fails before the model is loaded (documents are cached once read)."""
    from normtweak.assets import load_documents

    for name in names:
        if name:
            load_documents(name, "train")


def command_calibration(calib, options: dict, model, tokenizer, tweak=None):
    """Token ids [N, T] for a command: --data (checked against the tokenizer, the model's
    vocabulary and --seq-len), --from-text, else the self-generated set of the calibration
    cache (made and cached when missing). tweak: the TweakSpec whose default window length
    applies (None: the quantizer's)."""
    from normtweak.calib.cache import CalibrationKey, calibration_ids
    from normtweak.calib.text import calibration_from_text
    from normtweak.config import default_seq_len

    num_samples, seed = options["num_samples"], options["seed"]
    if calib is not None:
        calib.check_tokenizer(tokenizer)
        if o.given(["num_samples"]):
            calib.check_size(min_samples=num_samples)
        if options["seq_len"] is not None and options["seq_len"] != calib.seq_len:
            raise ValueError(f"--seq-len {options['seq_len']} with --data {options['data']}: "
                             f"its samples are {calib.seq_len} tokens long; drop --seq-len or "
                             f"make a set of that length")
        ids = calib.input_ids[:num_samples]
        check_vocabulary(ids, model, f"--data {options['data']}")
        return ids
    seq_len = default_seq_len(options["seq_len"], tweak)
    if options["from_text"]:
        return calibration_from_text(tokenizer, options["from_text"], num_samples, seq_len,
                                     seed).input_ids
    click.echo("no --data or --from-text: using the self-generated calibration set of the cache")
    key = CalibrationKey(options["model_ref"], "selfgen", num_samples, seq_len, seed)
    return calibration_ids(model, tokenizer, key, None, click.echo, options["device"]).input_ids


def check_vocabulary(ids, model, where: str) -> None:
    """Every token id is a row of the model's embedding (else the model would index past it)."""
    rows = model.get_input_embeddings().num_embeddings
    if ids.numel() and int(ids.max()) >= rows:
        raise ValueError(f"{where}: token id {int(ids.max())} is not in the model's vocabulary "
                         f"({rows} embeddings): the set was made with another tokenizer")


def _safetensors_header(head: bytes, path: Path) -> bool:
    """Does the file start like a safetensors file (an 8-byte header length that fits)?"""
    if len(head) < 8:
        return False
    size = int.from_bytes(head, "little")
    return 2 <= size <= path.stat().st_size - 8


def _settings_tag() -> str:
    """'' for the default sampling settings, else '-<hash>' so the cache never mistakes a set
    made with other languages or sampling for the default one that `run` looks up."""
    import hashlib
    import json

    ctx = click.get_current_context()
    names = ("languages", "greedy_tokens", "temperature", "top_k", "top_p")
    changed = {n: ctx.params[n] for n in names
               if ctx.params[n] != next(p.default for p in ctx.command.params if p.name == n)}
    if not changed:
        return ""
    return "-" + hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]


def print_samples(calib, tokenizer, count: int = 3, chars: int = 600) -> None:
    """Echo the first `count` samples decoded (each cut to `chars` characters)."""
    for i, ids in enumerate(calib.input_ids[:count]):
        text = tokenizer.decode(ids.tolist())
        cut = "..." if len(text) > chars else ""
        click.echo(f"--- sample {i} (first token {tokenizer.decode(ids[:1].tolist())!r}) ---")
        click.echo(text[:chars] + cut)


@click.command("generate-data", cls=o.Command)
@o.model_option("smollm2-135m")
@o.save_dir_option(help="folder for the .safetensors file [default: the calibration cache, "
                   "<cache>/calibration, where `normtweak run` finds it]")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="exact output path (overrides --save-dir and the automatic name)")
@o.overwrite_option
@click.option("--num-samples", "--num_samples", "num_samples", default=o.DEFAULT_NUM_SAMPLES,
              show_default=True, type=click.IntRange(min=1), help="calibration samples to make")
@click.option("--seq-len", "--seq_len", "seq_len", default=DEFAULT_SEQ_LEN, show_default=True,
              type=click.IntRange(min=1), help=o.SEQ_LEN_HELP)
@click.option("--languages", default="en,es,pt,zh,fr", show_default=True,
              help="first-token languages, comma-separated (self-generation only)")
@click.option("--from-text", "--from_text", "from_text", default=None, metavar="CORPUS",
              help=o.FROM_TEXT_HELP)
@o.device_option
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of every random choice (calibration, sample order)")
@click.option("--batch-size", "--batch_size", "batch_size", default=16, show_default=True,
              type=click.IntRange(min=1), help="samples generated together")
@click.option("--greedy-tokens", default=4, show_default=True, type=click.IntRange(min=0),
              help="self-generation: tokens after the random first one chosen greedily (the "
                   "paper's LLM-QAT recipe), before sampling")
@click.option("--temperature", default=1.0, show_default=True, type=float,
              help="self-generation: sampling temperature")
@click.option("--top-k", default=50, show_default=True, type=click.IntRange(min=0),
              help="self-generation: sample among the k most likely tokens (0: all)")
@click.option("--top-p", default=0.95, show_default=True, type=float,
              help="self-generation: ... and among the smallest set holding this probability")
@click.option("--print", "show", is_flag=True, help="print a few decoded samples")
def generate_data(**options) -> None:
    """Write a calibration set: self-generated by the model (default) or from a corpus."""
    from normtweak.calib.cache import cache_name, calibration_dir
    from normtweak.calib.generate import SamplingSpec, generate_calibration
    from normtweak.calib.text import calibration_from_text
    from normtweak.loading.float import load_model
    from normtweak.outputs import check_target

    model_ref, output, from_text = options["model_ref"], options["output"], options["from_text"]
    num_samples, seq_len, seed = options["num_samples"], options["seq_len"], options["seed"]
    overwrite = options["overwrite"]
    try:
        if output:
            if Path(output).suffix != ".safetensors":
                raise ValueError(f"--output {output}: a calibration set is a .safetensors file")
            o.check_writable(output, "--output")
            check_target(output, overwrite, "--output")
        if from_text:
            from normtweak.assets import load_documents

            load_documents(from_text, "train")  # a mistyped corpus fails before the model loads
        model, tokenizer = load_model(model_ref)
        method = "selfgen" + _settings_tag() if not from_text else f"text-{Path(from_text).stem}"
        path = Path(output) if output else calibration_dir(options["save_dir"]) / cache_name(
            model_ref, method, num_samples, seq_len, seed, tokenizer)
        check_target(path, overwrite, "--output")
        if from_text:
            calib = calibration_from_text(tokenizer, from_text, num_samples, seq_len, seed,
                                          model_name=model_ref)
        else:
            spec = SamplingSpec(options["greedy_tokens"], options["temperature"], options["top_k"],
                                options["top_p"], options["languages"])
            model.to(options["device"])
            calib = generate_calibration(model, tokenizer, num_samples, seq_len, seed=seed,
                                         sampling=spec, batch_size=options["batch_size"])
            calib.metadata["model"] = model_ref  # the name given, not the folder it loaded from
        check_target(path, overwrite, "--output")
        calib.save(path)
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {path}: {len(calib)} x {calib.seq_len} tokens ({calib.metadata['method']}, "
               f"seed {seed})")
    if options["show"]:
        print_samples(calib, tokenizer)
