"""A pretrained encoder (MiniLM offline, DistilBERT online) with every LayerNorm swapped for
RMSNorm (normtweak.studies.norms.swap_norms) and a mean-pooled classification head."""

from __future__ import annotations

import torch
from torch import nn

from normtweak.studies.norms import swap_norms

ENCODERS = {"minilm": "minilm-l6", "distilbert": "distilbert-base-uncased"}


class EncoderClassifier(nn.Module):
    """encoder -> mean over real tokens -> linear head. `base_model` lets normtweak.arch find the blocks."""

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def base_model(self) -> nn.Module:
        return self.encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if attention_mask is None:
            return self.head(hidden.mean(1))
        m = attention_mask[..., None].to(hidden.dtype)
        return self.head((hidden * m).sum(1) / m.sum(1).clamp(min=1))


class HFTokenizer:
    """The batch interface of classifier.RegexTokenizer over a transformers tokenizer."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer

    def encode(self, text: str, max_len: int) -> list[int]:
        return self.tok(text, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]

    def batch(self, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"].bool()


def load_encoder(name: str, num_labels: int, norm: str = "rms"):
    """(EncoderClassifier, HFTokenizer, SwapReport | None) with the encoder's norms as asked."""
    from normtweak.loading.float import load_model

    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")
    encoder, tok = load_model(ENCODERS[name])
    report = swap_norms(encoder, to="rms") if norm == "rms" else None
    return EncoderClassifier(encoder, num_labels), HFTokenizer(tok), report
