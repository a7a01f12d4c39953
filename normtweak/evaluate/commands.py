"""`normtweak eval`: perplexity, lm-eval tasks, or a float/quant/tweaked comparison.

    normtweak eval --model smollm2-135m --text wikipedia --split test --max-windows 4
    normtweak eval --model PATH --tasks nt_wikipedia,nt_rotten_tomatoes --limit 20
    normtweak eval --compare float=smollm2-135m quant=models/q tweaked=models/t --text austen
"""

from __future__ import annotations

import dataclasses
import json
import re
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
    from normtweak.io.float_model import load_model

    return load_model(name_or_path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[-60:] or "model"


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


def _emit(payload: dict, table: str, output: Path, overwrite: bool) -> None:
    from normtweak.outputs import write_file

    click.echo(table)
    write_file(output, json.dumps(payload, indent=2, default=str) + "\n", overwrite=overwrite)
    write_file(output.with_suffix(".md"), table + "\n", overwrite=overwrite)
    click.echo(f"\nwrote {output} and {output.with_suffix('.md')}")


def _check_outputs(output: Path, overwrite: bool) -> None:
    """Refuse existing results before spending time on the evaluation."""
    from normtweak.outputs import check_target

    check_target(output, overwrite)
    check_target(output.with_suffix(".md"), overwrite)


@click.command("eval")
@click.option("--model", "model_ref", help=o.MODEL_HELP + ", or a folder saved by normtweak")
@click.option("--tasks", default=None, help="Comma-separated lm-eval tasks: nt_wikipedia, "
              "nt_austen, nt_rotten_tomatoes (offline) or any built-in name (online).")
@click.option("--text", default=None, help="Corpus for our perplexity: wikipedia, austen, "
              "a .txt/.jsonl path, wikitext2 (online). Default wikipedia without --tasks.")
@click.option("--split", default="test", type=click.Choice(["train", "validation", "test"]))
@click.option("--window", type=int, default=None, help="Tokens per window (default min(context, 1024)).")
@click.option("--stride", type=int, default=None, help="Sliding-window stride (< window).")
@click.option("--max-windows", "--eval-windows", "max_windows", type=int, default=None,
              help="Score only the first N windows [default: all].")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--limit", type=int, default=None, help="lm-eval: first N documents per task.")
@click.option("--num-fewshot", type=int, default=None)
@click.option("--compare", multiple=True, metavar="LABEL=PATH",
              help="Compare models' perplexity; labels float and quant give the gap column.")
@o.device_option
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where local task data is generated [default: <cache>/lm_eval].")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="JSON path (a .md beside it); default results/eval-<model>.json.")
@o.overwrite_option
def eval_cmd(model_ref, tasks, text, split, window, stride, max_windows, batch_size, limit,
             num_fewshot, compare, device, cache_dir, output, overwrite) -> None:
    """Evaluate a model: our pinned perplexity, lm-eval tasks, or a comparison table."""
    from normtweak.common.tables import markdown_table
    from normtweak.evaluate.report import compare_rows

    opts = dict(window=window, stride=stride, batch_size=batch_size, max_windows=max_windows,
                device=device)
    try:
        if compare:
            pairs = [c.split("=", 1) for c in compare]
            if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
                raise ValueError("--compare takes LABEL=PATH, e.g. float=smollm2-135m quant=models/q")
            text = text or "wikipedia"
            output = output or Path("results") / "eval-compare.json"
            _check_outputs(output, overwrite)
            ppl = {label: _ppl(ref, text, split, opts) for label, ref in pairs}
            rows = compare_rows(ppl)
            cols = PPL_COLUMNS + ([("gap_recovered_%", "gap recovered %")]
                                  if any("gap_recovered_%" in r for r in rows) else [])
            table = _caption(rows[0], text, split) + "\n\n" + markdown_table(rows, cols)
            _emit({"text": text, "split": split, "rows": rows}, table, output, overwrite)
            return
        if not model_ref:
            raise ValueError("give --model (or --compare LABEL=PATH ...)")
        output = output or Path("results") / f"eval-{_slug(model_ref)}.json"
        _check_outputs(output, overwrite)
        payload, parts = {"model": model_ref}, []
        if text or not tasks:
            text = text or "wikipedia"
            row = _ppl(model_ref, text, split, opts)
            payload["perplexity"] = {"text": text, "split": split, **row}
            parts.append(_caption(row, text, split) + "\n\n"
                         + markdown_table([{"model": model_ref, **row}], PPL_COLUMNS))
        if tasks:
            parts.append(_run_tasks(model_ref, tasks, payload, cache_dir, limit, batch_size,
                                    window, num_fewshot, device))
        _emit(payload, "\n\n".join(parts), output, overwrite)
    except o.USER_ERRORS as err:
        raise click.ClickException(str(err)) from err


def _run_tasks(model_ref, tasks, payload, cache_dir, limit, batch_size, window, num_fewshot,
               device) -> str:
    from normtweak.common.tables import markdown_table
    from normtweak.evaluate.harness import results_rows, run_tasks
    from normtweak.outputs import user_cache_dir

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    cache_dir = cache_dir or user_cache_dir() / "lm_eval"
    model, tok = load_for_eval(model_ref)
    results = run_tasks(model, tok, names, cache_dir=cache_dir, limit=limit,
                        batch_size=batch_size, max_length=window, num_fewshot=num_fewshot,
                        device=device)
    rows = results_rows(results)
    payload["lm_eval"] = {"tasks": names, "limit": limit, "rows": rows,
                          "configs": results.get("configs", {})}
    caption = (f"lm-eval {', '.join(names)} (max_length={window or 'min(context, 1024)'}, "
               f"limit={limit})")
    return caption + "\n\n" + markdown_table(rows, ["task", "metric", "value", "stderr"])
