"""CalibrationSet on safetensors: round trip, metadata, tokenizer check, bad files."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from normtweak.calib.store import CalibrationSet, base_metadata, load_calibration, vocab_hash


def _set(tokenizer, n=7, seq=12, seed=0):
    ids = torch.randint(2, len(tokenizer), (n, seq), generator=torch.Generator().manual_seed(seed))
    meta = base_metadata(tokenizer, "selfgen", seed, "tiny-llama")
    meta.update(languages=["en", "zh"], sampling={"top_k": 50, "top_p": 0.95})
    return CalibrationSet(ids, meta)


def _other_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a completely different corpus of words"] * 8, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<s>", name_or_path="other-tok")


def test_vocab_hash_is_sha256_of_sorted_items(tokenizer):
    items = sorted(tokenizer.get_vocab().items())
    expected = hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()
    assert vocab_hash(tokenizer) == expected
    assert vocab_hash(_other_tokenizer()) != expected


def test_round_trip(tmp_path, tokenizer):
    calib = _set(tokenizer)
    path = calib.save(tmp_path / "sub" / "c.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.safetensors"]  # no temp left
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("input_ids").dtype == torch.int32
    back = CalibrationSet.load(path)
    assert back.input_ids.dtype == torch.int64 and torch.equal(back.input_ids, calib.input_ids)
    assert back.metadata == calib.metadata
    assert back.metadata["languages"] == ["en", "zh"] and back.metadata["seed"] == 0
    assert back.metadata["vocab_size"] == len(tokenizer) == 384
    for key in ("format_version", "created", "normtweak_version", "model", "method", "tokenizer"):
        assert key in back.metadata
    # saving again over an existing file replaces it
    CalibrationSet(calib.input_ids[:2], calib.metadata).save(path)
    assert len(CalibrationSet.load(path)) == 2


def test_batches_and_len(tokenizer):
    calib = _set(tokenizer, n=7)
    parts = list(calib.batches(3))
    assert [p.shape[0] for p in parts] == [3, 3, 1] and len(calib) == 7 and calib.seq_len == 12
    assert torch.equal(torch.cat(parts), calib.input_ids)
    with pytest.raises(ValueError):
        list(calib.batches(0))


def test_rejects_bad_tensors():
    with pytest.raises(ValueError):
        CalibrationSet(torch.zeros(3, 4))
    with pytest.raises(ValueError):
        CalibrationSet(torch.zeros(12, dtype=torch.int64))


def test_other_tokenizer_is_refused(tmp_path, tokenizer):
    path = _set(tokenizer).save(tmp_path / "c.safetensors")
    load_calibration(path, tokenizer)  # same tokenizer: fine
    other = _other_tokenizer()
    with pytest.raises(ValueError, match="other-tok") as err:
        load_calibration(path, other)
    assert vocab_hash(tokenizer)[:12] in str(err.value) and vocab_hash(other)[:12] in str(err.value)


def test_size_requirements(tmp_path, tokenizer):
    path = _set(tokenizer, n=7, seq=12).save(tmp_path / "c.safetensors")
    assert len(load_calibration(path, min_samples=7, min_seq_len=12)) == 7
    with pytest.raises(ValueError, match="7 samples, 8 needed"):
        load_calibration(path, min_samples=8)
    with pytest.raises(ValueError, match="seq_len 12, 13 needed"):
        load_calibration(path, min_seq_len=13)


@pytest.mark.parametrize("cut", [0.5, 0.99, 10])
def test_truncated_file_is_a_clear_error(tmp_path, tokenizer, cut):
    path = _set(tokenizer).save(tmp_path / "c.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)] if cut < 1 else data[:cut])
    with pytest.raises(ValueError, match="c.safetensors"):
        CalibrationSet.load(path)


def test_corrupt_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(ValueError, match="garbage.safetensors"):
        CalibrationSet.load(garbage)
    foreign = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(ValueError, match="not a normtweak calibration set"):
        CalibrationSet.load(foreign)
    with pytest.raises(FileNotFoundError, match="missing"):
        CalibrationSet.load(tmp_path / "missing.safetensors")


def test_ids_beyond_the_vocabulary_are_refused(tmp_path, tokenizer):
    calib = _set(tokenizer)
    calib.input_ids[0, 0] = len(tokenizer)
    path = calib.save(tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="vocab size 384"):
        CalibrationSet.load(path)
