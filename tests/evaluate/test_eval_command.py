"""`normtweak eval` as a user meets it: it prints the result and writes files only where
--output says, --compare takes several LABEL=PATH words, and a bad --output is refused before
any scoring."""

import json

from click.testing import CliRunner

from normtweak.cli import main
from normtweak.testing import tiny_corpus


def _tiny(tmp_path, make_tiny, tokenizer):
    make_tiny("llama").save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny", tiny_corpus(tmp_path / "corpus.txt")


def test_eval_prints_and_writes_only_where_asked(tmp_path, make_tiny, tokenizer, monkeypatch):
    model, corpus = _tiny(tmp_path, make_tiny, tokenizer)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["eval", "--model", str(model), "--text", str(corpus),
                                  "--max-windows", "2"])
    assert r.exit_code == 0, r.output
    assert "| ppl |" in r.output  # the table is printed
    assert not (tmp_path / "results").exists()  # nothing written into the working directory
    out = tmp_path / "e.json"
    r = CliRunner().invoke(main, ["eval", "--model", str(model), "--text", str(corpus),
                                  "--max-windows", "2", "--output", str(out)])
    assert r.exit_code == 0 and json.loads(out.read_text())["perplexity"]["windows"] == 2
    assert out.with_suffix(".md").is_file()
    r = CliRunner().invoke(main, ["eval", "--model", str(model), "--output", str(tmp_path / "e.txt")])
    assert r.exit_code == 1 and "give a .json path" in r.output


def test_compare_takes_several_pairs_after_one_flag(tmp_path, make_tiny, tokenizer):
    model, corpus = _tiny(tmp_path, make_tiny, tokenizer)
    r = CliRunner().invoke(main, ["eval", "--compare", f"a={model}", f"b={model}", "--text",
                                  str(corpus), "--max-windows", "1"])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.startswith("| a ") or
            line.startswith("| b ")]
    assert len(rows) == 2 and rows[0].split("|")[2] == rows[1].split("|")[2]  # same model
