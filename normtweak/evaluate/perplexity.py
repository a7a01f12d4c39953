"""Token-level perplexity with one pinned definition (plus bits per byte and word perplexity).

Definition (the same one lm-eval's `loglikelihood_rolling` uses, so the numbers agree):

* A corpus split is scored document by document (`split_perplexity`, which every command
  and benchmark uses), never as one joined stream.
* Each document is tokenized without special tokens and preceded by one prefix token
  (the tokenizer's BOS, else its EOS): the *stream* is `[BOS] + ids(document)`.
* Every token of the document is scored exactly once, `-log p(token | context)`, in
  float64 from the model's logits. The BOS itself is never scored.
* Default mode `"chunks"`: the stream is cut into non-overlapping windows of `window`
  tokens (default: the model's context, capped at 1024). A window's inputs are
  `stream[b : b + window]`; every one of its logits is used, the last one predicting the
  first token of the next window. So the first token of each later window is scored
  from a full window of context, and nothing is dropped. The last window is moved left
  so that it, too, has `window` inputs (it scores only the tokens not scored yet).
* Mode `"sliding"` (`stride < window`): windows of `window` inputs start every `stride`
  tokens; each window scores only the tokens no earlier window scored (its last
  `stride` logits), so every token but the first `window` ones sees at least
  `window - stride + 1` tokens of context. This is the transformers docs' "Perplexity of
  fixed-length models" recipe with one difference: the docs' code drops the window's
  last logit, we use it, and the last window is right-aligned as above, so
  `stride == window` gives exactly the `"chunks"` result.

lm-eval's `loglikelihood_rolling` with `max_length == window` makes exactly these
windows (BOS = its prefix token, context_len 1, a right-aligned last window), so its
log-likelihood equals `-nll_sum` up to float32 logits and batching.

Results (sums over documents):

    ppl           = exp(nll_sum / tokens)              tokens = scored tokens
    word_ppl      = exp(nll_sum / words)               words  = len(text.split())
    bits_per_byte = nll_sum / (bytes * ln 2)           bytes  = len(text.encode("utf-8"))

`words` and `bytes` are counted over the exact text scored. With `max_windows`, only the
first `max_windows` windows (over all documents, in order) are scored, and the scored
text of a cut document is its prefix up to the end of its last scored token (character
offsets from the tokenizer's offset mapping; by decoding the scored ids for a tokenizer
without offsets). A word cut by the end counts as one word. lm-eval counts words as
`len(re.split(r"\\s+", doc))`, one more per leading/trailing whitespace run: we strip
documents we hand to lm-eval, so both counts agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from normtweak.arch import device_of, model_context

MAX_DEFAULT_WINDOW = 1024
_ENCODER_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "albert", "electra", "deberta")


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of a text and the counts behind it (see the module docstring)."""

    ppl: float
    nll_sum: float  # nats, summed over the scored tokens
    tokens: int
    bits_per_byte: float
    word_ppl: float
    words: int
    bytes: int
    mode: str  # "chunks" or "sliding"
    window: int
    stride: int
    windows: int

    def describe(self) -> str:
        """The mode in words, for table captions: e.g. 'chunks window=1024'."""
        if self.mode == "chunks":
            return f"chunks window={self.window}"
        return f"sliding window={self.window} stride={self.stride}"


@dataclass(frozen=True)
class Window:
    """One forward pass: inputs stream[begin:end], scoring targets stream[end-count+1:end+1]."""

    doc: int
    begin: int
    end: int
    count: int


def default_window(model: nn.Module) -> int:
    """min(model context, 1024)."""
    context = model_context(model)
    return min(context, MAX_DEFAULT_WINDOW) if context else MAX_DEFAULT_WINDOW


def check_causal(model: nn.Module) -> None:
    """ValueError for encoder (masked-LM) models, where perplexity is not defined."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in _ENCODER_TYPES or getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(
            f"perplexity is not defined for the {model_type!r} encoder model: it is not a "
            "left-to-right language model. Evaluate it with a task instead (e.g. "
            "`normtweak eval --tasks nt_rotten_tomatoes`) or use `layer_stats` deltas."
        )


def plan_windows(n_tokens: Sequence[int], window: int, stride: int) -> list[Window]:
    """The windows that score every token of documents of n_tokens tokens each (plus BOS).

    A document of n tokens has a stream of n + 1 (BOS first); its targets are stream
    positions 1..n. Windows start every `stride` and score what earlier ones did not;
    the last one is moved left to end at the stream's end with `window` inputs.
    """
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 1 and 1 <= stride <= window, got {window}, {stride}")
    plan = []
    for doc, n in enumerate(n_tokens):
        scored = 0  # stream positions 1..scored are done
        begin = 0
        while scored < n:
            begin = min(begin, max(0, n - window))  # the last window keeps a full context
            end = min(begin + window, n)  # inputs stream[begin:end] predict stream[begin+1:end+1]
            plan.append(Window(doc, begin, end, end - scored))
            scored = end
            begin += stride
    return plan


def _counts(text: str) -> tuple[int, int]:
    return len(text.split()), len(text.encode("utf-8"))


def _scored_text(tokenizer, text: str, ids: list[int], n_scored: int) -> str:
    """The prefix of `text` covered by its first n_scored tokens."""
    if n_scored >= len(ids):
        return text
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return text[: enc["offset_mapping"][n_scored - 1][1]]
    return tokenizer.decode(ids[:n_scored])


@torch.no_grad()
def _window_nll(model: nn.Module, streams: list[torch.Tensor], batch: list[Window],
                device: torch.device) -> list[float]:
    """Summed float64 NLL of each window's scored targets (windows of equal length)."""
    inputs = torch.stack([streams[w.doc][w.begin:w.end] for w in batch]).to(device)
    logits = model(input_ids=inputs).logits  # [B, T, vocab]
    out = []
    for row, w in enumerate(batch):
        targets = streams[w.doc][w.end - w.count + 1 : w.end + 1].to(device)
        scored = logits[row, -w.count :].double()
        nll = torch.logsumexp(scored, -1) - scored.gather(-1, targets[:, None]).squeeze(-1)
        out.append(float(nll.sum()))
    return out


def perplexity(
    model: nn.Module,
    tokenizer,
    text: str | Sequence[str],
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
    max_windows: int | None = None,
    device: torch.device | str | None = None,
) -> PerplexityResult:
    """Token-level perplexity of `text` under a causal LM (definition: module docstring).

    text: one string, or a list of documents each scored from its own BOS (as lm-eval's
    rolling tasks do). window: inputs per forward pass (default min(context, 1024)).
    stride: None or == window for non-overlapping "chunks"; < window for "sliding".
    max_windows: score only the first this many windows. device: where to run (default:
    where the model is; the model is moved there and back). Windows of equal length are
    batched `batch_size` at a time.
    """
    check_causal(model)
    docs = [text] if isinstance(text, str) else list(text)
    window = window or default_window(model)
    context = model_context(model)
    if context is not None and window > context:
        raise ValueError(f"window {window} is longer than the model's context {context}")
    stride = stride or window
    mode = "chunks" if stride == window else "sliding"
    if batch_size < 1 or (max_windows is not None and max_windows < 1):
        raise ValueError("batch_size and max_windows must be >= 1")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start documents with")
    ids = [tokenizer(d, add_special_tokens=False, verbose=False)["input_ids"] for d in docs]
    if sum(len(i) for i in ids) == 0:
        raise ValueError("the text is empty: nothing to score")
    plan = plan_windows([len(i) for i in ids], window, stride)[:max_windows]
    streams = [torch.tensor([bos] + i, dtype=torch.long) for i in ids]

    original = device_of(model)
    target = torch.device(device) if device is not None else original
    model.to(target)
    nll_sum = 0.0
    bar = tqdm(total=len(plan), desc="perplexity", unit="window", leave=False, delay=2,
               disable=None)  # shown on a terminal only
    try:
        for start in range(0, len(plan), batch_size):
            chunk = plan[start : start + batch_size]
            groups: dict[int, list[Window]] = {}
            for w in chunk:
                groups.setdefault(w.end - w.begin, []).append(w)
            for group in groups.values():
                nll_sum += sum(_window_nll(model, streams, group, target))
            bar.update(len(chunk))
    finally:
        bar.close()
        model.to(original)

    scored_per_doc = [0] * len(docs)
    for w in plan:
        scored_per_doc[w.doc] += w.count
    words = n_bytes = 0
    for doc, n in enumerate(scored_per_doc):
        if n:
            w_, b_ = _counts(_scored_text(tokenizer, docs[doc], ids[doc], n))
            words, n_bytes = words + w_, n_bytes + b_
    tokens = sum(scored_per_doc)
    return PerplexityResult(
        ppl=math.exp(nll_sum / tokens),
        nll_sum=nll_sum,
        tokens=tokens,
        bits_per_byte=nll_sum / (n_bytes * math.log(2)) if n_bytes else float("nan"),
        word_ppl=math.exp(nll_sum / words) if words else float("nan"),
        words=words,
        bytes=n_bytes,
        mode=mode,
        window=window,
        stride=stride,
        windows=len(plan),
    )


def split_perplexity(model: nn.Module, tokenizer, corpus: str, split: str, *,
                     max_windows: int | None = None, window: int | None = None,
                     device: torch.device | str | None = None) -> PerplexityResult:
    """The perplexity of a corpus split as normtweak reports it everywhere (`normtweak eval`,
    `run`, `tweak`, the grid search, every benchmark): each stripped document of the split
    from its own BOS (as lm-eval's rolling loglikelihood scores documents), the first
    `max_windows` windows in document order."""
    from normtweak.evaluate.taskdata import corpus_documents

    return perplexity(model, tokenizer, corpus_documents(corpus, split), window=window,
                      max_windows=max_windows, device=device)
