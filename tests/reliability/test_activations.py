"""ActivationStore/ActivationBudget: sizes, spilling to a memory-mapped file, identical results."""

import math
import os

import pytest
import torch

from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.testing import tiny_batch
from normtweak.tweak.pipeline import tweak_model
from normtweak.walk.activations import ActivationBudget, format_size, parse_size


@pytest.mark.parametrize("text, expected", [
    ("8GiB", 8 * 2**30), ("8G", 8 * 2**30), ("512MiB", 512 * 2**20), ("2GB", 2e9),
    ("1.5 KiB", 1536), ("100", 100), (4096, 4096), ("0", 0), ("1e3", 1000), ("3kb", 3000),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_parse_size_unlimited_and_errors():
    assert parse_size(None) == math.inf and parse_size("inf") == math.inf
    for bad in ("8 gigs", "GiB", "-1", "", "1.2.3MB"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)
    assert format_size(1.5 * 2**30) == "1.50 GiB" and format_size(12) == "12 B"


def _tensors():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, 5, 8, generator=gen), torch.randn(1, 5, 8, generator=gen).to(torch.bfloat16),
            torch.randn(2, 5, 8, generator=gen).to(torch.float16), torch.randn(3, 7, generator=gen)]


def test_store_spills_beyond_the_budget_and_reads_back_bit_identical(tmp_path):
    tensors = _tensors()
    first = tensors[0].numel() * 4
    budget = ActivationBudget(first, folder=tmp_path)  # room for exactly the first tensor
    store = budget.store()
    store.extend(tensors)
    assert len(store) == 4 and store.on_disk == 3
    assert budget.in_memory == first and budget.spilled == sum(t.numel() * t.element_size()
                                                               for t in tensors[1:])
    for got, want in zip(store, tensors):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))  # bit-identical, NaN-safe
    assert store[-1].shape == (3, 7) and len(store[1:3]) == 2
    files = list(tmp_path.rglob("activations.bin"))
    assert len(files) == 1 and os.path.getsize(files[0]) == budget.spilled
    # a second store finds the budget full and spills everything
    other = budget.store()
    other.append(tensors[0])
    assert other.on_disk == 1
    del store  # collected: its memory is released and its file removed
    assert budget.in_memory == 0 and len(list(tmp_path.rglob("activations.bin"))) == 1
    other.close()
    assert list(tmp_path.rglob("activations.bin")) == []


def test_unlimited_budget_keeps_everything_in_memory(tmp_path):
    budget = ActivationBudget(None, folder=tmp_path)
    store = budget.store()
    store.extend(_tensors())
    assert store.on_disk == 0 and budget.spilled == 0 and budget.peak_in_memory > 0
    assert list(tmp_path.iterdir()) == []


def test_read_back_tensor_is_independent_of_the_file(tmp_path):
    store = ActivationBudget(0, folder=tmp_path).store()
    store.append(torch.ones(4))
    t = store[0]
    t.add_(1)  # a private copy: the stored value does not change
    assert torch.equal(store[0], torch.ones(4))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("target", ["quantized_input", "float_input"])
def test_pipeline_on_disk_activations_gives_the_same_model(make_tiny, tmp_path, target):
    ids = torch.cat([tiny_batch(1, 24, seed=s) for s in range(3)])
    quant, spec = QuantSpec(bits=3, group_size=16), TweakSpec(lr=1e-2, iters=2, target=target)
    in_memory, on_disk = make_tiny("llama"), make_tiny("llama")
    res_mem = tweak_model(in_memory, ids, quant, spec, run=RunSpec(progress=False))
    budget = ActivationBudget("0", folder=tmp_path / "spill")
    res_disk = tweak_model(on_disk, ids, quant, spec, run=RunSpec(progress=False, activation_budget=budget))
    assert budget.spilled > 0 and budget.peak_in_memory == 0
    assert [b.loss_after for b in res_disk.blocks] == [b.loss_after for b in res_mem.blocks]
    x = tiny_batch(2, 16, seed=7)
    torch.testing.assert_close(_logits(on_disk, x), _logits(in_memory, x), atol=0, rtol=0)
    assert budget.in_memory == 0 and not list((tmp_path / "spill").rglob("*.bin"))


def test_budget_caps_activation_memory(make_tiny):
    ids = torch.cat([tiny_batch(1, 24, seed=s) for s in range(4)])
    one_batch = 24 * 64 * 4  # [1, 24, 64] float32
    budget = ActivationBudget(5 * one_batch)  # fewer than the 4 batches x 3 live sets
    tweak_model(make_tiny("llama"), ids, QuantSpec(bits=4), TweakSpec(lr=1e-3), run=RunSpec(progress=False, activation_budget=budget))
    assert budget.peak_in_memory <= 5 * one_batch and budget.spilled > 0
