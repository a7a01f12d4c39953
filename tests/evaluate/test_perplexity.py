"""Perplexity against a float64 hand computation, one forward pass per scored token."""

import math

import pytest
import torch

from normtweak.evaluate import PerplexityResult, perplexity
from normtweak.evaluate.perplexity import plan_windows
from normtweak.testing import _SAMPLE_TEXT

CAUSAL = ("gpt2", "opt", "bloom", "llama", "gemma")
TEXT = " ".join(line.strip() for line in _SAMPLE_TEXT.strip().splitlines()[:4])


def hand_nll(model, tokenizer, text, window, stride):
    """Sum of -log p(token) in float64 from the model's logits.

    Token at stream position p (stream = [BOS] + ids, p = 1..n) is predicted from
    stream[b:p], b = the first window start (a multiple of stride, the last window
    right-aligned at n - window) whose window reaches p. Tokens sharing a start b share
    one forward pass over stream[b:max p] (causal: position p-1-b only sees stream[b:p]).
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = [tokenizer.bos_token_id] + ids
    n = len(ids)
    by_start = {}
    for p in range(1, n + 1):
        b = 0 if p <= window else math.ceil((p - window) / stride) * stride
        by_start.setdefault(min(b, max(0, n - window)), []).append(p)
    total = 0.0
    for b, targets in by_start.items():
        assert max(targets) - b <= window
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([stream[b : max(targets)]])).logits[0]
        logp = torch.log_softmax(logits.double(), -1)
        total -= sum(logp[p - 1 - b, stream[p]].item() for p in targets)
    return total, n


@pytest.mark.parametrize("fam", CAUSAL)
def test_chunks_equal_float64_hand_computation(make_tiny, tokenizer, fam):
    model = make_tiny(fam)
    expected, n = hand_nll(model, tokenizer, TEXT, window=16, stride=16)
    result = perplexity(model, tokenizer, TEXT, window=16)
    assert result.mode == "chunks" and result.tokens == n
    assert result.windows == math.ceil(n / 16)
    assert result.nll_sum == pytest.approx(expected, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(expected / n), rel=1e-5)


@pytest.mark.parametrize("stride", [2, 5])
def test_sliding_equals_hand_computation(make_tiny, tokenizer, stride):
    model = make_tiny("llama")
    expected, n = hand_nll(model, tokenizer, TEXT[:120], window=12, stride=stride)
    result = perplexity(model, tokenizer, TEXT[:120], window=12, stride=stride)
    assert result.mode == "sliding" and result.tokens == n
    assert result.nll_sum == pytest.approx(expected, rel=1e-5)


def test_stride_equal_to_window_is_non_overlapping(make_tiny, tokenizer):
    model = make_tiny("gpt2")
    chunks = perplexity(model, tokenizer, TEXT, window=20)
    sliding = perplexity(model, tokenizer, TEXT, window=20, stride=20)
    assert sliding.nll_sum == chunks.nll_sum and sliding.windows == chunks.windows
    assert perplexity(model, tokenizer, TEXT, window=20, stride=7).nll_sum != chunks.nll_sum


def test_plan_scores_every_token_once():
    for n in (1, 15, 16, 17, 40):
        for window, stride in ((16, 16), (16, 5), (16, 1), (4, 3)):
            targets = []
            for w in plan_windows([n], window, stride):
                assert w.end - w.begin == min(window, n)
                targets += list(range(w.end - w.count + 1, w.end + 1))
            assert targets == list(range(1, n + 1))


def test_word_and_byte_formulas_hand_case(make_tiny, tokenizer):
    text = "héllo  wörld\nfoo bar."  # 4 words; é and ö are 2 bytes each in UTF-8
    result = perplexity(make_tiny("opt"), tokenizer, text, window=64)
    assert (result.words, result.bytes) == (4, 23)
    assert result.word_ppl == pytest.approx(math.exp(result.nll_sum / 4), rel=1e-12)
    assert result.bits_per_byte == pytest.approx(result.nll_sum / (23 * math.log(2)), rel=1e-12)


def test_max_windows_counts_scored_prefix_only(make_tiny, tokenizer):
    model = make_tiny("llama")
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    prefix = tokenizer.decode(ids[:24], clean_up_tokenization_spaces=False)
    assert TEXT.startswith(prefix)  # byte-level BPE decodes ASCII text exactly
    cut = perplexity(model, tokenizer, TEXT, window=12, max_windows=2)
    assert (cut.windows, cut.tokens) == (2, 24)
    assert (cut.words, cut.bytes) == (len(prefix.split()), len(prefix.encode()))
    alone, _ = hand_nll(model, tokenizer, TEXT, window=12, stride=12)
    assert cut.nll_sum < alone


def test_documents_are_scored_separately_and_batching_is_exact(make_tiny, tokenizer):
    model = make_tiny("bloom")
    a, b = TEXT[:150], TEXT[150:]
    both = perplexity(model, tokenizer, [a, b], window=16, batch_size=3)
    parts = [perplexity(model, tokenizer, d, window=16) for d in (a, b)]
    assert both.nll_sum == pytest.approx(sum(p.nll_sum for p in parts), rel=1e-6)
    assert both.tokens == sum(p.tokens for p in parts)
    assert both.words == sum(p.words for p in parts)


def test_default_window_is_capped_context(make_tiny, tokenizer):
    result = perplexity(make_tiny("gpt2"), tokenizer, TEXT)
    assert isinstance(result, PerplexityResult)
    assert result.window == 256 and result.describe() == "chunks window=256"


@pytest.mark.parametrize("fam", ["bert", "distilbert"])
def test_encoders_have_no_perplexity(make_tiny, tokenizer, fam):
    with pytest.raises(ValueError, match="not defined"):
        perplexity(make_tiny(fam), tokenizer, TEXT)


def test_bad_arguments(make_tiny, tokenizer):
    model = make_tiny("gpt2")
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tokenizer, TEXT, window=8, stride=9)
    with pytest.raises(ValueError, match="context"):
        perplexity(model, tokenizer, TEXT, window=512)
    with pytest.raises(ValueError, match="empty"):
        perplexity(model, tokenizer, "")
