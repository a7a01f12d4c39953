"""One perplexity definition everywhere: `normtweak eval`, `normtweak run`, `normtweak tweak`'s
closing scores, the grid search and the benchmarks give the same number for the same model,
corpus split and windows (each document from its own BOS), and it is not the number of the
documents joined into one stream."""

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from normtweak.cli import main
from normtweak.evaluate import perplexity, split_perplexity
from normtweak.testing import tiny_corpus

ROOT = Path(__file__).resolve().parents[2]


def _benchmark(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from normtweak.arch import prepare_model
    from normtweak.testing import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("one-definition")
    model, tok = prepare_model(tiny_model("llama")), tiny_tokenizer()
    model.save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    return root, model, tok, tiny_corpus(root / "corpus.txt")


def _eval_cli(root, corpus, split, windows, name, *extra):
    out = root / f"{name}.json"
    r = CliRunner().invoke(main, ["eval", "--model", str(root / "tiny"), "--text", str(corpus),
                                  "--split", split, "--max-windows", str(windows),
                                  "--output", str(out), *extra])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())["perplexity"]["ppl"]


def test_eval_split_perplexity_and_the_benchmarks_agree(setup):
    root, model, tok, corpus = setup
    ours = split_perplexity(model, tok, str(corpus), "test", max_windows=3, window=64).ppl
    assert _eval_cli(root, corpus, "test", 3, "eval", "--window", "64") == pytest.approx(
        ours, rel=1e-12)
    args = SimpleNamespace(text=str(corpus), window=64, max_windows=3)
    runner = _benchmark("peer_runner")
    assert runner.evaluate(model, tok, args)["test"]["ppl"] == pytest.approx(ours, rel=1e-12)
    peers = _benchmark("peers")
    from normtweak.evaluate.taskdata import corpus_documents

    texts = {"test": corpus_documents(str(corpus), "test")}
    assert peers.evaluate(model, tok, texts, args)["test"]["ppl"] == pytest.approx(ours, rel=1e-12)
    # the definition matters: the same documents joined into one stream score differently
    joined = perplexity(model, tok, "\n\n".join(texts["test"]), max_windows=3, window=64).ppl
    assert not math.isclose(joined, ours, rel_tol=1e-6)


def test_run_and_tweak_report_the_same_number_as_eval(setup, tmp_path, monkeypatch):
    root, model, tok, corpus = setup
    monkeypatch.setenv("NORMTWEAK_CACHE", str(tmp_path / "cache"))
    # tiny's context is 256 tokens, so every command scores min(256, 1024) = 256-token windows
    test_ppl = _eval_cli(root, corpus, "test", 2, "test")
    val_ppl = _eval_cli(root, corpus, "validation", 2, "val")
    r = CliRunner().invoke(main, ["run", "--model", str(root / "tiny"), "--text", str(corpus),
                                  "--num-samples", "2", "--seq-len", "16", "--eval-windows", "2",
                                  "--save-dir", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "run.run.json").read_text())
    assert report["results"]["float"]["ppl"] == pytest.approx(test_ppl, rel=1e-12)
    r = CliRunner().invoke(main, ["tweak", "--model", str(root / "tiny"), "--from-text",
                                  str(corpus), "--num-samples", "2", "--seq-len", "16",
                                  "--validation-text", str(corpus), "--eval-windows", "2",
                                  "--save-dir", str(tmp_path / "tweak")])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "tweak" / "normtweak_quantization.json").read_text())
    assert record["validation"]["ppl"]["float"] == pytest.approx(val_ppl, rel=1e-12)
