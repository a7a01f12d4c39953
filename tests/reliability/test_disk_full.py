"""A full disk, for real: a 2 MiB tmpfs filled up to the byte count where each writer we call
runs out (safetensors, tokenizers, gguf, json, the calibration writer, a checkpoint). Every
one ends in one `Error:` line, "disk full while saving to X; nothing was written" (a
checkpoint: "disk full while writing X; earlier files are intact"), and nothing of ours is
left on the disk."""

import pytest
from click.testing import CliRunner
from faultkit import CORPUS, SmallDisk, llama_folder, one_error, tweak_args

from normtweak.cli import main

PAGE = 4096


@pytest.fixture(scope="module")
def work(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("diskfull")
    llama_folder(root / "llama", tokenizer)
    (root / "corpus.txt").write_text(CORPUS)
    res = CliRunner().invoke(main, tweak_args(root / "llama", root / "corpus.txt", root / "w4",
                                              "--nbits", "4", "--group-size", "32"))
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture
def disk(tmp_path):
    small = SmallDisk(tmp_path / "small")
    yield small
    small.close()


def _pages(path) -> int:
    return -(-path.stat().st_size // PAGE) * PAGE


def root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return err


@pytest.mark.slow  # a tweak run and a save
@pytest.mark.parametrize("writer", ["safetensors", "tokenizer"])
def test_saving_a_model(work, disk, writer):
    from normtweak.io import load_quantized, save_quantized

    w4 = work / "w4"
    before_tokenizer = sum(_pages(w4 / n) for n in ("model.safetensors", "config.json",
                                                     "normtweak_quantization.json"))
    disk.fill(PAGE * 4 if writer == "safetensors" else before_tokenizer + PAGE)
    out = disk.path / "out"
    res = CliRunner().invoke(main, tweak_args(work / "llama", work / "corpus.txt", out,
                                              "--nbits", "4", "--group-size", "32"))
    one_error(res, f"disk full while saving to {out}; nothing was written")
    assert disk.entries() == ["filler"]
    model, tokenizer = load_quantized(w4)  # the same through the Python API: which writer
    with pytest.raises(OSError, match=f"disk full while saving to {out}; nothing was written") as err:
        save_quantized(model, tokenizer, out)
    cause = root_cause(err.value)
    if writer == "safetensors":
        assert type(cause).__name__ == "SafetensorError", repr(cause)
    else:
        assert type(cause) is Exception and "os error 28" in str(cause), repr(cause)
    assert disk.entries() == ["filler"]


def test_exporting_gguf(work, disk):
    disk.fill(PAGE * 2)
    out = disk.path / "gguf"
    res = CliRunner().invoke(main, ["export", "--model", str(work / "w4"), "--format", "gguf",
                                    "--save_dir", str(out)])
    one_error(res, f"disk full while saving to {out}; nothing was written")
    assert disk.entries() == ["filler"]


def test_gguf_short_writes_are_a_full_disk_too(work, disk):
    """gguf writes tensors with numpy's tofile, whose short write is an OSError without errno
    ("4608 requested and 352 written"): at every fill level the documented error."""
    from normtweak.io import load_quantized
    from normtweak.io.export import write_model

    model, tokenizer = load_quantized(work / "w4")
    out, causes = disk.path / "gguf", []
    for pages in (2, 4, 10, 16, 24):
        (disk.path / "filler").unlink(missing_ok=True)
        disk.fill(PAGE * pages)
        with pytest.raises(OSError, match=f"disk full while saving to {out}; nothing was written") as err:
            write_model(model, tokenizer, out, "gguf")
        causes.append(root_cause(err.value))
        assert disk.entries() == ["filler"]
    assert any(c.errno is None and " requested and " in str(c) for c in causes), causes


def test_writing_a_json_report(work, disk):
    disk.fill(0)
    report = disk.path / "eval.json"
    res = CliRunner().invoke(main, ["eval", "--model", str(work / "w4"), "--text",
                                    str(work / "corpus.txt"), "--max-windows", "1", "--output",
                                    str(report)])
    one_error(res, f"disk full while saving to {report}; nothing was written")
    assert disk.entries() == ["filler"]


def test_writing_a_calibration_set(work, disk):
    disk.fill(0)
    out = disk.path / "calib.safetensors"
    res = CliRunner().invoke(main, ["generate-data", "--model", str(work / "llama"), "--from-text",
                                    str(work / "corpus.txt"), "--num-samples", "64", "--seq-len",
                                    "64", "--output", str(out)])
    one_error(res, f"disk full while saving to {out}; nothing was written")
    assert disk.entries() == ["filler"]


def test_writing_a_checkpoint(work, disk):
    disk.fill(PAGE * 8)
    ckpt, out = disk.path / "ckpt", disk.path / "out"
    res = CliRunner().invoke(main, tweak_args(work / "llama", work / "corpus.txt", out,
                                              "--checkpoint-dir", str(ckpt)))
    one_error(res, "disk full while writing", "block_0000.safetensors", "--resume")
    assert disk.entries() == ["ckpt", "filler"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["run.json"]
