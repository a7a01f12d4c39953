"""Text-derived calibration windows come only from the corpus's train split."""

import torch

from normtweak.assets import load_text
from normtweak.calib.text import calibration_from_text, random_windows, token_stream


def _write_corpus(tmp_path, n_docs=40):
    # Each document is made of words that name it, so a window's origin is readable.
    docs = [" ".join(f"doc{i}w{j}" for j in range(60)) for i in range(n_docs)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(docs))
    return path


def test_windows_come_only_from_train_split(tmp_path, tokenizer):
    path = _write_corpus(tmp_path)
    train = load_text(path, split="train")
    held_out = load_text(path, split="validation") + load_text(path, split="test")
    train_docs = {w.split("w")[0] for w in train.split()}
    held_docs = {w.split("w")[0] for w in held_out.split()}
    assert train_docs and held_docs and not train_docs & held_docs

    calib = calibration_from_text(tokenizer, path, num_samples=16, seq_len=24, seed=3)
    assert calib.metadata["split"] == "train"
    stream = token_stream(tokenizer, train)
    for row in calib.input_ids:
        text = tokenizer.decode(row.tolist())
        seen = {w.split("w")[0] for w in text.split() if w.startswith("doc") and "w" in w}
        assert not seen & held_docs, f"window drew from held-out documents {seen & held_docs}"
        # The window is a contiguous slice of the train stream.
        starts = (stream == row[0]).nonzero().flatten().tolist()
        assert any(torch.equal(stream[s : s + 24], row.to(stream.dtype)) for s in starts)


def test_random_windows_seeded_and_in_range():
    stream = torch.arange(100)
    a = random_windows(stream, 8, 10, seed=0)
    assert torch.equal(a, random_windows(stream, 8, 10, seed=0))
    assert not torch.equal(a, random_windows(stream, 8, 10, seed=1))
    # Windows are consecutive runs of the stream.
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(8, 9, dtype=a.dtype))
    assert a.max() < 100 and a.min() >= 0
