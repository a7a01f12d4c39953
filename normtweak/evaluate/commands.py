"""`normtweak eval`: perplexity, lm-eval tasks, or a float/quant/tweaked comparison.

    normtweak eval --model smollm2-135m --text wikipedia --split test --max-windows 4
    normtweak eval --model PATH --tasks nt_wikipedia,nt_rotten_tomatoes --limit 20
    normtweak eval --compare float=smollm2-135m quant=models/q tweaked=models/t --text austen

Results are printed; --output also writes them (JSON and a Markdown table).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import click

from normtweak import options as o

PPL_COLUMNS = [("model", "model"), ("ppl", "ppl"), ("word_ppl", "word ppl"),
               ("bits_per_byte", "bits/byte"), ("tokens", "tokens"), ("windows", "windows")]


def load_for_eval(name_or_path: str):
    """(model, tokenizer): a normtweak-quantized folder via normtweak.io, else assets."""
    config = Path(name_or_path) / "config.json"
    if (Path(name_or_path) / "normtweak_quantization.json").is_file() and not config.is_file():
        from normtweak.io import load_quantized  # a GGUF export

        return load_quantized(name_or_path)
    if config.is_file():
        qc = json.loads(config.read_text(encoding="utf-8")).get("quantization_config") or {}
        from normtweak.io.load import READ_METHODS

        if qc.get("quant_method") in READ_METHODS:
            from normtweak.io import load_quantized

            return load_quantized(name_or_path)
    from normtweak.loading.float import load_model

    return load_model(name_or_path)


def _ppl(model_ref: str, text: str, split: str, opts: dict) -> dict:
    from normtweak.evaluate.perplexity import perplexity
    from normtweak.evaluate.taskdata import corpus_documents

    model, tok = load_for_eval(model_ref)
    windows = f"{opts['max_windows']} windows" if opts.get("max_windows") else "all windows"
    click.echo(f"{model_ref}: perplexity on {text}/{split} ({windows}) ...", err=True)
    start = time.perf_counter()
    result = perplexity(model, tok, corpus_documents(text, split), **opts)  # = split_perplexity
    row = dataclasses.asdict(result)
    row.update(seconds=round(time.perf_counter() - start, 2), source=model_ref)
    return row


def _caption(row: dict, text: str, split: str) -> str:
    mode = f"window={row['window']}" + (f" stride={row['stride']}" if row["mode"] == "sliding" else "")
    return (f"Perplexity on {text}/{split} ({row['mode']} {mode}, BOS per document, "
            f"{row['windows']} windows, {row['tokens']} tokens scored)")


def _emit(payload: dict, table: str, output: Path | None, overwrite: bool) -> None:
    """Print the table; write the JSON (and a .md beside it) only where --output says."""
    from normtweak.outputs import write_file

    click.echo(table)
    if output is None:
        return
    write_file(output, json.dumps(payload, indent=2, default=str) + "\n", overwrite=overwrite)
    write_file(output.with_suffix(".md"), table + "\n", overwrite=overwrite)
    click.echo(f"\nwrote {output} and {output.with_suffix('.md')}")


def _check_output(output: Path | None, overwrite: bool) -> None:
    """Refuse a bad or existing --output before spending time on the evaluation."""
    from normtweak.outputs import check_target

    if output is None:
        return
    if output.suffix != ".json":
        raise ValueError(f"--output {output}: give a .json path (a .md table is written beside "
                         f"it)")
    o.check_writable(output, "--output")
    check_target(output, overwrite, "--output")
    check_target(output.with_suffix(".md"), overwrite, "--output")


@click.command("eval", cls=o.Command, pair_options=("--compare",))
@click.option("--model", "model_ref", help=o.MODEL_HELP + ", or a folder saved by normtweak")
@click.option("--tasks", default=None, help="Comma-separated lm-eval tasks: nt_wikipedia, "
              "nt_austen, nt_rotten_tomatoes (offline) or any built-in name (online).")
@click.option("--text", default=None, help="Corpus for our perplexity: wikipedia, austen, "
              "a .txt/.jsonl path, wikitext2 (online). Default wikipedia without --tasks.")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "validation", "test"]))
@click.option("--window", type=int, default=None,
              help="Tokens per window [default: min(context, 1024)].")
@click.option("--stride", type=int, default=None, help="Sliding-window stride (< window).")
@click.option("--max-windows", "--eval-windows", "max_windows", type=click.IntRange(min=0),
              default=o.DEFAULT_EVAL_WINDOWS, show_default=True,
              help="Score the first N windows of the split (about a minute on 2 CPU cores for "
                   "SmolLM2); 0: all of them.")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="windows per forward pass")
@click.option("--limit", type=int, default=None, help="lm-eval: first N documents per task.")
@click.option("--num-fewshot", type=int, default=None, help="lm-eval: few-shot examples")
@click.option("--compare", multiple=True, metavar="LABEL=PATH",
              help="Compare models' perplexity: --compare float=smollm2-135m quant=models/q "
                   "(or the flag repeated); labels float and quant give the gap column.")
@o.device_option
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where local task data is generated [default: <cache>/lm_eval].")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="also write the result here (.json, and a .md table beside it) "
                   "[default: print only]")
@o.overwrite_option
def eval_cmd(**options) -> None:
    """Evaluate a model: our pinned perplexity, lm-eval tasks, or a comparison table."""
    from normtweak.common.tables import markdown_table
    from normtweak.evaluate.report import compare_rows

    opts = {k: options[k] for k in ("window", "stride", "batch_size", "device")}
    opts["max_windows"] = options["max_windows"] or None
    text, split, output = options["text"], options["split"], options["output"]
    try:
        _check_output(output, options["overwrite"])
        if options["compare"]:
            pairs = [c.split("=", 1) for c in options["compare"]]
            if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
                raise ValueError("--compare takes LABEL=PATH, e.g. --compare "
                                 "float=smollm2-135m quant=models/q")
            text = text or "wikipedia"
            ppl = {label: _ppl(ref, text, split, opts) for label, ref in pairs}
            rows = compare_rows(ppl)
            cols = PPL_COLUMNS + ([("gap_recovered_%", "gap recovered %")]
                                  if any("gap_recovered_%" in r for r in rows) else [])
            table = _caption(rows[0], text, split) + "\n\n" + markdown_table(rows, cols)
            _emit({"text": text, "split": split, "rows": rows}, table, output,
                  options["overwrite"])
            return
        model_ref = options["model_ref"]
        if not model_ref:
            raise ValueError("give --model (or --compare LABEL=PATH ...)")
        payload, parts = {"model": model_ref}, []
        if text or not options["tasks"]:
            text = text or "wikipedia"
            row = _ppl(model_ref, text, split, opts)
            payload["perplexity"] = {"text": text, "split": split, **row}
            parts.append(_caption(row, text, split) + "\n\n"
                         + markdown_table([{"model": model_ref, **row}], PPL_COLUMNS))
        if options["tasks"]:
            parts.append(_run_tasks(model_ref, payload, options))
        _emit(payload, "\n\n".join(parts), output, options["overwrite"])
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err


def _run_tasks(model_ref: str, payload: dict, options: dict) -> str:
    from normtweak.common.tables import markdown_table
    from normtweak.evaluate.harness import HarnessSpec, results_rows, run_tasks
    from normtweak.outputs import user_cache_dir

    names = [t.strip() for t in options["tasks"].split(",") if t.strip()]
    cache_dir = options["cache_dir"] or user_cache_dir() / "lm_eval"
    model, tok = load_for_eval(model_ref)
    spec = HarnessSpec(limit=options["limit"], batch_size=options["batch_size"],
                       max_length=options["window"], num_fewshot=options["num_fewshot"])
    results = run_tasks(model, tok, names, cache_dir=cache_dir, spec=spec,
                        device=options["device"])
    rows = results_rows(results)
    payload["lm_eval"] = {"tasks": names, "limit": options["limit"], "rows": rows,
                          "configs": results.get("configs", {})}
    caption = (f"lm-eval {', '.join(names)} (max_length="
               f"{options['window'] or 'min(context, 1024)'}, limit={options['limit']})")
    return caption + "\n\n" + markdown_table(rows, ["task", "metric", "value", "stderr"])
