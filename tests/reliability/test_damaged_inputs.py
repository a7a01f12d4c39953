"""Damaged inputs through the CLI: one `Error:` line naming the file and what is wrong, never a
traceback or an error without the file's name (.jsonl lines that are not objects or not JSON,
a .txt that is not UTF-8, a calibration set whose metadata is damaged, a corrupted run.json;
config.json values are in test_load_faults.py)."""

import json
import shutil

import pytest
from click.testing import CliRunner
from faultkit import CORPUS, llama_folder, one_error, tweak_args

from normtweak.calib.store import CalibrationSet, base_metadata
from normtweak.cli import main
from normtweak.testing import tiny_batch


@pytest.fixture(scope="module")
def work(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("damaged")
    llama_folder(root / "llama", tokenizer)
    (root / "corpus.txt").write_text(CORPUS)
    return root


@pytest.fixture(scope="module")
def finished(work):
    """The checkpoint folder of a finished run (copy it before changing it)."""
    ckpt = work / "finished"
    res = _tweak(work, work / "corpus.txt", work / "out", "--checkpoint-dir", str(ckpt))
    assert res.exit_code == 0, res.output
    return ckpt


def _tweak(work, corpus, out, *extra):
    return CliRunner().invoke(main, tweak_args(work / "llama", corpus, out, *extra))


def _jsonl(path, bad_line: str, at: int = 5):
    lines = [json.dumps({"text": f"Document {i}: the quick brown fox. " * 8}) for i in range(12)]
    lines.insert(at - 1, bad_line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("bad_line, message", [
    ("42", "a .jsonl corpus needs one JSON object per line with a 'text' string"),
    ('["text", "a list"]', "a .jsonl corpus needs one JSON object per line"),
    ('"text: a string"', "a .jsonl corpus needs one JSON object per line"),
    ('{"text": 7}', "a .jsonl corpus needs one JSON object per line with a 'text' string"),
    ('{"text": "unterminated', "not valid JSON"),
])
def test_a_jsonl_line_that_is_not_an_object_or_not_json(work, tmp_path, bad_line, message):
    corpus = _jsonl(tmp_path / "corpus.jsonl", bad_line)
    out = tmp_path / "out"
    one_error(_tweak(work, corpus, out), f"{corpus}:5: {message}")
    assert not out.exists()


def test_a_txt_corpus_that_is_not_utf8(work, tmp_path):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(CORPUS.replace("fox", "f\xf6x").encode("latin-1"))
    out = tmp_path / "out"
    one_error(_tweak(work, corpus, out), f"{corpus} is not UTF-8 text", "save it as UTF-8")
    assert not out.exists()


@pytest.mark.parametrize("key, value", [("format_version", "abc"), ("format_version", 1.5),
                                        ("vocab_size", "many")])
def test_a_calibration_set_with_damaged_metadata(work, tmp_path, tokenizer, key, value):
    meta = base_metadata(tokenizer, "text", 0, None)
    meta[key] = value
    data = CalibrationSet(tiny_batch(2, 32), meta).save(tmp_path / "calib.safetensors")
    out = tmp_path / "out"
    args = ["tweak", "--model", str(work / "llama"), "--data", str(data), "--save_dir", str(out),
            "--eval-windows", "0"]
    one_error(CliRunner().invoke(main, args), f"{data}: metadata {key} is {value!r}",
              "damaged")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "not json", "a list"])
def test_a_corrupted_checkpoint_run_json(work, finished, tmp_path, damage):
    ckpt = shutil.copytree(finished, tmp_path / "ckpt")
    run = ckpt / "run.json"
    text = run.read_text()
    run.write_text({"truncated": text[: len(text) // 2], "not json": "\x00\x01garbage",
                    "a list": "[1, 2, 3]"}[damage])
    damaged = run.read_bytes()
    for extra in (["--resume"], ["--overwrite"]):
        res = _tweak(work, work / "corpus.txt", tmp_path / "b", "--checkpoint-dir", str(ckpt),
                     *extra)
        if damage == "a list":  # valid JSON, but not a record of ours
            one_error(res, f"--checkpoint-dir {ckpt} holds files normtweak did not write (run.json)")
        else:
            one_error(res, f"{run} cannot be read", "damaged")
        assert run.read_bytes() == damaged
    assert not (tmp_path / "b").exists()
