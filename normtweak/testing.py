"""Tiny offline models and a tiny tokenizer, for tests, examples and smoke runs.

Every family the adapters know is built from a small config (2 blocks, hidden 64)
with seeded random weights; nothing is downloaded.
"""

from __future__ import annotations

import functools

import torch
import transformers
from transformers import PreTrainedTokenizerFast

FAMILIES = ("gpt2", "opt", "bloom", "llama", "gemma", "bert", "distilbert")
HIDDEN, BLOCKS, HEADS, FFN, POSITIONS = 64, 2, 4, 128, 256

_SAMPLE_TEXT = """
The quick brown fox jumps over the lazy dog. A language model predicts the next token.
Quantization maps floating point weights to a few integer levels with a scale and a zero.
Norm tweaking trains only the weights of the normalization layers after quantization.
El rápido zorro marrón salta sobre el perro perezoso. La cuantización reduce la memoria.
O rato roeu a roupa do rei de Roma. A quantização reduz o tamanho do modelo.
Le renard brun saute par-dessus le chien paresseux. La quantification réduit la taille.
Der schnelle braune Fuchs springt über den faulen Hund. Быстрая лиса прыгает.
敏捷的棕色狐狸跳过了懒狗。语言模型预测下一个词。量化把浮点权重映射到整数。
素早い茶色の狐がのろまな犬を飛び越える。 1234567890 + - * / = ( ) [ ] { } .
"""


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab 384) trained on a few lines of text, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_SAMPLE_TEXT.strip().splitlines() * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
        model_max_length=POSITIONS,
    )


def tiny_config(family: str, vocab_size: int = 384) -> transformers.PretrainedConfig:
    """A 2-block, hidden-64 config of `family` (one of FAMILIES)."""
    t = transformers
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    if family == "gpt2":
        return t.GPT2Config(n_layer=BLOCKS, n_embd=HIDDEN, n_head=HEADS, n_positions=POSITIONS,
                            n_inner=FFN, **common)
    if family == "opt":
        return t.OPTConfig(num_hidden_layers=BLOCKS, hidden_size=HIDDEN, num_attention_heads=HEADS,
                           ffn_dim=FFN, max_position_embeddings=POSITIONS,
                           word_embed_proj_dim=HIDDEN, **common)
    if family == "bloom":
        return t.BloomConfig(n_layer=BLOCKS, hidden_size=HIDDEN, n_head=HEADS, **common)
    if family == "llama":
        return t.LlamaConfig(num_hidden_layers=BLOCKS, hidden_size=HIDDEN, num_attention_heads=HEADS,
                             num_key_value_heads=2, intermediate_size=FFN,
                             max_position_embeddings=POSITIONS, tie_word_embeddings=True, **common)
    if family == "gemma":
        return t.Gemma3TextConfig(num_hidden_layers=BLOCKS, hidden_size=HIDDEN,
                                  num_attention_heads=HEADS, num_key_value_heads=2, head_dim=16,
                                  intermediate_size=FFN, max_position_embeddings=POSITIONS,
                                  sliding_window=8, layer_types=["sliding_attention",
                                                                  "full_attention"], **common)
    if family == "bert":
        return t.BertConfig(num_hidden_layers=BLOCKS, hidden_size=HIDDEN, num_attention_heads=HEADS,
                            intermediate_size=FFN, max_position_embeddings=POSITIONS, **common)
    if family == "distilbert":
        return t.DistilBertConfig(n_layers=BLOCKS, dim=HIDDEN, n_heads=HEADS, hidden_dim=FFN,
                                  max_position_embeddings=POSITIONS, **common)
    raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES}")


def tiny_model(family: str, seed: int = 0, randomize_norms: bool = True) -> torch.nn.Module:
    """A seeded random tiny model: causal LM for decoders, masked LM for encoders.

    randomize_norms: norm weights start away from 1 (and biases from 0), so tests see
    the effect of every norm parameter.
    """
    config = tiny_config(family)
    torch.manual_seed(seed)
    if family in ("bert", "distilbert"):
        model = transformers.AutoModelForMaskedLM.from_config(config)
    else:
        model = transformers.AutoModelForCausalLM.from_config(config)
    if randomize_norms:
        from normtweak.arch import is_norm

        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for m in model.modules():
                if is_norm(m) and getattr(m, "weight", None) is not None:
                    m.weight.add_(0.1 * torch.randn(m.weight.shape, generator=gen))
                    if getattr(m, "bias", None) is not None:
                        m.bias.add_(0.1 * torch.randn(m.bias.shape, generator=gen))
    model.eval()
    return model


def tiny_batch(batch: int = 2, seq: int = 16, vocab_size: int = 384, seed: int = 0) -> torch.Tensor:
    """Random token ids [batch, seq] (avoiding the two special ids)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab_size, (batch, seq), generator=gen)


def tiny_corpus(path):
    """A small .txt corpus (30 paragraphs) at `path`, for grid searches and evaluations in
    tests: split by document like any corpus (normtweak.assets.load_documents)."""
    from pathlib import Path

    words = ["small", "tiny", "quantized", "float", "tweaked"]
    paragraphs = [" ".join(f"The {words[(p + i) % 5]} model predicts the next token number "
                           f"{p * 7 + i}." for i in range(6)) for p in range(30)]
    path = Path(path)
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path
