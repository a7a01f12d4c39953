"""Self-generated calibration data, the LLM-QAT way that norm tweaking uses.

For each sample: draw a first token uniformly from the vocabulary (special and added
tokens never), keep it only when it passes the language filter (see
`normtweak.calib.languages`), generate the next `greedy_tokens` tokens greedily, then
sample (temperature, top-k, top-p) until `seq_len` tokens. Generation is batched with a
KV cache (our own loop over `past_key_values`, so sampling draws from a seeded
`torch.Generator`, not from torch's global RNG). Special tokens (end-of-text, pad, chat
markers) are suppressed at every step, so every sample holds exactly `seq_len` real
tokens and no sample ends early.

Same (seed, batch_size, device, model) -> the same ids. The first tokens depend only on
the seed; the continuations may differ across devices or batch sizes through float
rounding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from normtweak.arch import model_context
from normtweak.calib.languages import in_languages, parse_languages
from normtweak.calib.store import CalibrationSet, base_metadata

DEFAULT_SEQ_LEN = 2048


@dataclass(frozen=True)
class SamplingSpec:
    """How each sample's tokens are chosen.

    greedy_tokens: tokens after the first that are picked greedily (argmax).
    temperature, top_k (0: off), top_p (1.0: off): for the sampled rest.
    languages: codes for the first token's language (None: en, es, pt, zh, fr; a
    comma-separated string or a tuple).
    """

    greedy_tokens: int = 4
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.95
    languages: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.greedy_tokens < 0:
            raise ValueError(f"greedy_tokens must be >= 0, got {self.greedy_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 turns it off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def decoding(self) -> dict:
        """The settings after the first token (a calibration set's "sampling" metadata)."""
        return {k: v for k, v in asdict(self).items() if k != "languages"}


def default_seq_len(model: Any) -> int:
    """DEFAULT_SEQ_LEN, or the model's context when that is shorter."""
    context = model_context(model)
    return min(DEFAULT_SEQ_LEN, context) if context else DEFAULT_SEQ_LEN


def special_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """Ids that must never be drawn or generated: special, added, eos/pad of the model."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
            value = getattr(config, key, None) if config is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
    return ids


def draw_first_tokens(
    tokenizer: Any,
    num_samples: int,
    languages: tuple[str, ...],
    generator: torch.Generator,
    vocab_limit: int | None = None,
    banned: set[int] | None = None,
    max_draws: int | None = None,
) -> torch.Tensor:
    """Draw `num_samples` first tokens uniformly (with replacement) among ids < vocab_limit,
    rejecting special/banned ids and tokens outside `languages`. Returns [num_samples] int64.
    """
    vocab = min(len(tokenizer), vocab_limit or len(tokenizer))
    banned = special_ids(tokenizer) | (banned or set())
    max_draws = max_draws or max(10 * vocab, 100 * num_samples)
    verdict: dict[int, bool] = {}
    chosen: list[int] = []
    draws = 0
    while len(chosen) < num_samples:
        if draws >= max_draws:
            raise ValueError(
                f"found only {len(chosen)} of {num_samples} first tokens in {languages} after "
                f"{draws} draws from a vocabulary of {vocab}; choose other languages"
            )
        for token in torch.randint(0, vocab, (256,), generator=generator).tolist():
            draws += 1
            if token not in verdict:
                ok = token not in banned and in_languages(tokenizer.decode([token]), languages)
                verdict[token] = ok
            if verdict[token]:
                chosen.append(token)
                if len(chosen) == num_samples:
                    break
    return torch.tensor(chosen, dtype=torch.int64)


def filter_logits(logits: torch.Tensor, spec: SamplingSpec) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on [batch, vocab] float logits."""
    logits = logits / spec.temperature
    if spec.top_k and spec.top_k < logits.shape[-1]:
        kth = torch.topk(logits, spec.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if spec.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= spec.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _next_tokens(logits: torch.Tensor, greedy: bool, spec: SamplingSpec,
                 generator: torch.Generator) -> torch.Tensor:
    if greedy:
        return logits.argmax(-1)
    probs = filter_logits(logits, spec).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate_batch(
    model: Any,
    first: torch.Tensor,
    seq_len: int,
    spec: SamplingSpec,
    banned: torch.Tensor,
    generator: torch.Generator,
    progress: Any = None,
) -> torch.Tensor:
    """Continue first tokens [batch] to [batch, seq_len] int64 with a KV cache.

    banned: [vocab] bool on the model's device, True for ids never to generate.
    All rows have the same length and no padding, so no attention mask is needed.
    """
    ids = torch.empty(first.shape[0], seq_len, dtype=torch.int64, device=first.device)
    ids[:, 0] = first
    step_input, cache = ids[:, :1], None
    key = _cache_argument(model)
    for pos in range(1, seq_len):
        out = model(input_ids=step_input, use_cache=True, **{key: cache})
        cache = getattr(out, key)
        logits = out.logits[:, -1, : banned.shape[0]].float()
        logits = logits.masked_fill(banned, float("-inf"))
        ids[:, pos] = _next_tokens(logits, pos <= spec.greedy_tokens, spec, generator)
        step_input = ids[:, pos : pos + 1]
        if progress is not None:
            progress.update(first.shape[0])
    return ids


def _cache_argument(model: Any) -> str:
    """'cache' (transformers >= 5.2x) or 'past_key_values' (older, deprecated since)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _banned_mask(tokenizer: Any, model: Any, vocab: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(vocab, dtype=torch.bool)
    ids = [i for i in special_ids(tokenizer, model) if 0 <= i < vocab]
    mask[ids] = True
    mask[len(tokenizer):] = True  # padded embedding rows have no token to decode
    return mask.to(device)


def generate_calibration(
    model: Any,
    tokenizer: Any,
    num_samples: int = 128,
    seq_len: int | None = None,
    *,
    seed: int = 0,
    sampling: SamplingSpec | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> CalibrationSet:
    """Self-generate `num_samples` x `seq_len` calibration tokens with `model`.

    Runs on the device the model is on. seq_len None: 2048 or the model's context.
    sampling: how tokens are chosen, the first token's languages included (SamplingSpec).
    The set's metadata names the model by its name_or_path; a caller that knows it by
    another name sets metadata["model"].
    """
    from tqdm.auto import tqdm

    spec = sampling or SamplingSpec()
    langs = parse_languages(spec.languages)
    seq_len = seq_len or default_seq_len(model)
    context = model_context(model)
    if num_samples < 1 or seq_len < 1 or batch_size < 1:
        raise ValueError("num_samples, seq_len and batch_size must be >= 1")
    if context and seq_len > context:
        raise ValueError(f"seq_len {seq_len} is longer than the model's context {context}")
    device = next(model.parameters()).device
    vocab = min(model.get_input_embeddings().num_embeddings, model.config.vocab_size)
    banned = _banned_mask(tokenizer, model, vocab, device)
    first = draw_first_tokens(tokenizer, num_samples, langs, torch.Generator().manual_seed(seed),
                              vocab_limit=vocab, banned=special_ids(tokenizer, model))
    sample_gen = torch.Generator(device=device).manual_seed(seed + 1)
    rows = []
    with tqdm(total=num_samples * (seq_len - 1), unit="tok", desc="generating",
              disable=not progress) as bar:
        for start in range(0, num_samples, batch_size):
            batch = first[start : start + batch_size].to(device)
            rows.append(generate_batch(model, batch, seq_len, spec, banned, sample_gen, bar).cpu())
    meta = base_metadata(tokenizer, "selfgen", seed, _model_name(model))
    meta.update(languages=list(langs), sampling=spec.decoding(), batch_size=batch_size)
    return CalibrationSet(torch.cat(rows), meta)


def _model_name(model: Any) -> str | None:
    return getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
