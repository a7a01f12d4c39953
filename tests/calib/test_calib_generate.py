"""Self-generated calibration data on tiny decoders: shape, seeds, filter, KV cache, sampling."""

import math

import pytest
import torch

from normtweak.calib.generate import (
    SamplingSpec,
    default_seq_len,
    filter_logits,
    generate_calibration,
    special_ids,
)
from normtweak.calib.languages import in_languages
from normtweak.calib.store import vocab_hash

DECODERS = ("gpt2", "opt", "bloom", "llama", "gemma")


def _gen(model, tokenizer, **kw):
    kw = {"num_samples": 5, "seq_len": 24, "batch_size": 3, "progress": False, **kw}
    return generate_calibration(model, tokenizer, **kw)


def _full_logits(model, ids, tokenizer):
    """No-cache forward over whole sequences; banned ids masked as generation does."""
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits.double()
    banned = [i for i in special_ids(tokenizer, model) if i < logits.shape[-1]]
    logits[..., banned] = float("-inf")
    return logits


def test_shape_dtype_metadata(make_tiny, tokenizer):
    model = make_tiny("llama")
    calib = _gen(model, tokenizer, sampling=SamplingSpec(languages="en,zh"), seed=3)
    assert calib.input_ids.shape == (5, 24) and calib.input_ids.dtype == torch.int64
    meta = calib.metadata
    assert meta["method"] == "selfgen" and meta["seed"] == 3 and meta["languages"] == ["en", "zh"]
    assert meta["sampling"] == {"greedy_tokens": 4, "temperature": 1.0, "top_k": 50, "top_p": 0.95}
    assert meta["vocab_sha256"] == vocab_hash(tokenizer) and meta["vocab_size"] == 384


def test_seeds(make_tiny, tokenizer):
    model = make_tiny("gpt2")
    a, b = _gen(model, tokenizer, seed=0), _gen(model, tokenizer, seed=0)
    c = _gen(model, tokenizer, seed=1)
    assert torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.input_ids[:, 0], c.input_ids[:, 0])
    assert not torch.equal(a.input_ids[:, 5:], c.input_ids[:, 5:])


def test_first_tokens_pass_the_filter_and_no_special_tokens(make_tiny, tokenizer):
    calib = _gen(make_tiny("opt"), tokenizer, num_samples=12,
                 sampling=SamplingSpec(languages=("zh", "en")))
    specials = set(tokenizer.all_special_ids)
    for row in calib.input_ids.tolist():
        first = tokenizer.decode(row[:1])
        assert in_languages(first, ("zh", "en")) and first.strip().isalpha()
        assert not specials & set(row)  # every one of seq_len tokens is a real token


@pytest.mark.parametrize("family", DECODERS)
def test_cached_greedy_equals_full_forward(make_tiny, tokenizer, family):
    """top_k=1 makes every step greedy: each token must be the argmax of a no-cache forward.

    seq_len 24 is past Gemma's sliding window (8), so its windowed cache is exercised.
    """
    model = make_tiny(family)
    calib = _gen(model, tokenizer, sampling=SamplingSpec(top_k=1))
    ids = calib.input_ids
    ref = _full_logits(model, ids, tokenizer).argmax(-1)
    assert torch.equal(ref[:, :-1], ids[:, 1:])


def test_sampled_tokens_are_in_the_top_k(make_tiny, tokenizer):
    model = make_tiny("llama")
    spec = SamplingSpec(greedy_tokens=2, top_k=3, top_p=1.0, temperature=2.0)
    ids = _gen(model, tokenizer, sampling=spec, seq_len=32).input_ids
    logits = _full_logits(model, ids, tokenizer)[:, :-1]
    rank = (logits > logits.gather(-1, ids[:, 1:, None])).sum(-1)  # 0 = the argmax
    assert (rank[:, :2] == 0).all()  # greedy part
    assert (rank < 3).all() and (rank[:, 2:] > 0).any()  # sampled part stays in the top 3


def test_filter_logits_against_hand_computed_cases():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda spec: torch.isfinite(filter_logits(logits, spec))[0].tolist()
    assert kept(SamplingSpec(top_k=0, top_p=0.7)) == [True, True, False, False]
    assert kept(SamplingSpec(top_k=0, top_p=0.5)) == [True, False, False, False]
    assert kept(SamplingSpec(top_k=0, top_p=0.96)) == [True, True, True, True]
    assert kept(SamplingSpec(top_k=3, top_p=1.0)) == [True, True, True, False]
    out = filter_logits(logits, SamplingSpec(top_k=0, top_p=1.0, temperature=2.0))
    expected = [math.sqrt(p) / sum(math.sqrt(q) for q in probs[0].tolist()) for p in probs[0]]
    assert torch.allclose(out.softmax(-1)[0].double(), torch.tensor(expected, dtype=torch.double))


def test_filter_logits_top_p_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=gen, dtype=torch.float64)
    out = filter_logits(logits, SamplingSpec(top_k=0, top_p=0.8))
    for row, got in zip(logits, out):
        p = row.softmax(-1)
        order = p.argsort(descending=True)
        n = int((p[order].cumsum(0) < 0.8).sum()) + 1  # smallest prefix holding 0.8
        assert set(torch.isfinite(got).nonzero().flatten().tolist()) == set(order[:n].tolist())


def test_bad_arguments(make_tiny, tokenizer):
    model = make_tiny("llama")
    assert default_seq_len(model) == 256  # the tiny context is shorter than 2048
    with pytest.raises(ValueError, match="context 256"):
        _gen(model, tokenizer, seq_len=300)
    with pytest.raises(ValueError, match="unknown language"):
        _gen(model, tokenizer, sampling=SamplingSpec(languages="en,klingon"))
    with pytest.raises(ValueError, match="top_p"):
        SamplingSpec(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingSpec(temperature=0.0)


@pytest.mark.slow
def test_smollm2_samples_read_as_text():
    from normtweak.loading.float import load_model

    model, tok = load_model("smollm2-135m")
    calib = generate_calibration(model, tok, num_samples=2, seq_len=48, seed=0, progress=False)
    assert calib.input_ids.shape == (2, 48)
    assert not set(special_ids(tok, model)) & set(calib.input_ids.flatten().tolist())
    for row in calib.input_ids:
        text = tok.decode(row.tolist())
        words = text.split()
        # natural text: mostly alphabetic words separated by spaces
        assert len(words) >= 15 and sum(w.strip(".,;:!?\"'()").isalpha() for w in words) > len(words) / 2
