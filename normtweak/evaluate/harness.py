"""lm-eval on an in-memory (e.g. quantized) model: local offline tasks and built-in ones.

`run_tasks(model, tokenizer, ["nt_wikipedia", "hellaswag"], cache_dir=...)` wraps the
model in `HFLM(pretrained=model, tokenizer=tokenizer)`; names in `LOCAL_TASKS` get their
data generated into `cache_dir` first (see taskdata), any other name is passed to
lm-eval as is (built-in tasks such as wikitext, lambada_openai, hellaswag need the hub).

lm-eval's rolling windows are the same as `perplexity`'s "chunks" mode when its
max_length equals our window: `run_tasks` passes `max_length=window` (HarnessSpec's;
default min(context, 1024), like `perplexity`) so the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from normtweak.evaluate.perplexity import check_causal, default_window
from normtweak.evaluate.taskdata import LOCAL_TASKS, prepare_local_tasks

_SKIP_METRICS = ("alias",)


@dataclass(frozen=True)
class HarnessSpec:
    """How lm-eval runs the tasks.

    limit: documents per task (the first ones; None: all). max_length: lm-eval's context
    (None: min(model context, 1024)). log_samples: keep per-document results.
    """

    limit: int | None = None
    batch_size: int = 1
    max_length: int | None = None
    num_fewshot: int | None = None
    log_samples: bool = False


def run_tasks(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[str],
    *,
    cache_dir: str | Path,
    spec: HarnessSpec | None = None,
    device: str | None = None,
    documents=None,
) -> dict[str, Any]:
    """Run lm-eval `tasks` on the model; returns lm-eval's results dict.

    spec: limit, batch size, context, few-shot, sample logging (HarnessSpec).
    documents: passed to `prepare_local_tasks` (tests).
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    spec = spec or HarnessSpec()
    check_causal(model)
    if not tasks:
        raise ValueError("no tasks given; local tasks: " + ", ".join(LOCAL_TASKS))
    local = [t for t in tasks if t in LOCAL_TASKS]
    include = prepare_local_tasks(cache_dir, local, documents=documents) if local else None
    manager = TaskManager(include_path=str(include) if include else None)
    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=spec.batch_size,
        max_length=spec.max_length or default_window(model),
        **({"device": device} if device else {}),
    )
    return simple_evaluate(
        model=lm,
        tasks=list(tasks),
        num_fewshot=spec.num_fewshot,
        limit=spec.limit,
        task_manager=manager,
        log_samples=spec.log_samples,
        bootstrap_iters=0,
    )


def rolling_loglikelihoods(results: dict[str, Any], task: str) -> list[float]:
    """Per-document rolling log-likelihoods (nats) of a task run with log_samples=True."""
    samples = results.get("samples", {}).get(task)
    if samples is None:
        raise ValueError(f"no samples for {task!r}: run it with log_samples=True")
    ordered = sorted(samples, key=lambda s: s["doc_id"])
    return [float(s["filtered_resps"][0]) if not isinstance(s["filtered_resps"][0], (list, tuple))
            else float(s["filtered_resps"][0][0]) for s in ordered]


def results_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten lm-eval results to rows {task, metric, value, stderr} (stderr may be None)."""
    rows = []
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if key in _SKIP_METRICS or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({
                "task": task,
                "metric": metric,
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float))
                and math.isfinite(stderr) else None,
            })
    return rows
