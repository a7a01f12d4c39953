"""A small transformer text classifier of our own, with a norm="rms" | "layer" switch.

Pre-norm encoder blocks (x + attn(norm1(x)); x + mlp(norm2(x))), mean pooling over real
tokens, a final norm and a linear head. Its linears are plain nn.Linear and its norms are
normtweak.studies.norms modules, so the quantizers and the norm-tweak pipeline treat it like any
supported family (adapter "nt_classifier" in normtweak.arch).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from normtweak.studies.norms import LayerNorm, RMSNorm

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
PAD, UNK = 0, 1


class RegexTokenizer:
    """Lower-cased words and single punctuation marks; a vocabulary of the most frequent."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = ["<pad>", "<unk>", *vocab]
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def fit(cls, texts: list[str], max_vocab: int = 20000, min_count: int = 2) -> RegexTokenizer:
        counts = Counter(t for text in texts for t in TOKEN.findall(text.lower()))
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        return cls(words[: max_vocab - 2])

    def encode(self, text: str, max_len: int) -> list[int]:
        return [self.index.get(t, UNK) for t in TOKEN.findall(text.lower())][:max_len]

    def batch(self, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, L] padded with 0, mask [B, L] bool); every row keeps at least one token."""
        ids = [self.encode(t, max_len) or [UNK] for t in texts]
        length = max(len(r) for r in ids)
        out = torch.full((len(ids), length), PAD, dtype=torch.long)
        for i, row in enumerate(ids):
            out[i, : len(row)] = torch.tensor(row)
        return out, out != PAD

    def __len__(self) -> int:
        return len(self.vocab)


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_labels: int
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    ffn: int = 256
    max_len: int = 128
    norm: str = "rms"
    dropout: float = 0.1
    model_type: str = "nt_classifier"

    def __post_init__(self) -> None:
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"norm must be 'rms' or 'layer', got {self.norm!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")


def make_norm(kind: str, hidden: int) -> nn.Module:
    return RMSNorm(hidden, eps=1e-6) if kind == "rms" else LayerNorm(hidden, eps=1e-5)


class Block(nn.Module):
    def __init__(self, c: ClassifierConfig) -> None:
        super().__init__()
        self.heads = c.heads
        self.norm1, self.norm2 = make_norm(c.norm, c.hidden), make_norm(c.norm, c.hidden)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(c.hidden, c.hidden) for _ in range(4))
        self.up, self.down = nn.Linear(c.hidden, c.ffn), nn.Linear(c.ffn, c.hidden)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, h = x.shape
        y = self.norm1(x)
        q, k, v = (p(y).view(b, t, self.heads, h // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        attn_mask = None if mask is None else mask[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.drop(self.o_proj(a.transpose(1, 2).reshape(b, t, h)))
        return x + self.drop(self.down(F.gelu(self.up(self.norm2(x)))))


class TextClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(config.max_len, config.hidden) * 0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = make_norm(config.norm, config.hidden)
        self.head = nn.Linear(config.hidden, config.num_labels)
        nn.init.normal_(self.embed.weight, std=1 / math.sqrt(config.hidden))

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, num_labels]."""
        x = self.embed(input_ids) + self.pos[: input_ids.shape[1]]
        for block in self.blocks:
            x = block(x, attention_mask)
        x = self.norm(x)
        if attention_mask is None:
            pooled = x.mean(1)
        else:
            m = attention_mask[..., None].to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return self.head(pooled)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters of norm modules)."""
    from normtweak.arch import is_norm

    norm = sum(p.numel() for m in model.modules() if is_norm(m) for p in m.parameters(recurse=False))
    return sum(p.numel() for p in model.parameters()), norm
