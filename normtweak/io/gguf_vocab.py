"""The tokenizer inside a GGUF file, as llama.cpp reads it: the vocabulary with token types, the
pre-tokenizer's name, merges, special token ids and the chat template."""

from __future__ import annotations

import json
import warnings

# llama.cpp picks its pre-tokenizer (the regex that splits text before BPE) by the name in
# tokenizer.ggml.pre. Its converter (convert_hf_to_gguf.py, get_vocab_base_pre) names it by the
# sha256 of str(tokenizer.encode(PRE_TOKENIZER_CHECK)); these are its names for the byte-level
# BPE tokenizers of the Llama-family models we export.
PRE_TOKENIZER_CHECK = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) "
    "\U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785"
    "\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
}


def pre_tokenizer_name(tokenizer) -> str | None:
    """llama.cpp's name for the tokenizer's pre-tokenizer (None: not one it names)."""
    import hashlib

    digest = hashlib.sha256(str(tokenizer.encode(PRE_TOKENIZER_CHECK)).encode()).hexdigest()
    return PRE_TOKENIZERS.get(digest)


def looks_special(token: str) -> bool:
    """Added tokens llama.cpp treats as control tokens even when not flagged special."""
    return token.startswith("<|") and token.endswith("|>")


def token_types(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """(tokens, GGUF token types) for ids 0..vocab_size-1: ids without a token are UNUSED
    padding, added special tokens CONTROL, other added tokens USER_DEFINED, the rest NORMAL."""
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = getattr(tokenizer, "added_tokens_decoder", {})
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if token in added:
            special = getattr(decoder.get(i), "special", False) or looks_special(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """A byte-level BPE tokenizer (GPT-2 style, as SmolLM2's) as tokenizer.ggml.* keys: the
    vocabulary with token types, the pre-tokenizer's name, and (through gguf-py's own
    SpecialVocab, as llama.cpp's converter does) merges, special token ids and the chat
    template."""
    import tempfile

    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str()) if hasattr(
        tokenizer, "backend_tokenizer") else None
    if not spec or spec["model"]["type"] != "BPE":
        warnings.warn("tokenizer is not byte-level BPE: the GGUF file carries no tokenizer",
                      stacklevel=4)
        return
    writer.add_tokenizer_model("gpt2")
    pre = pre_tokenizer_name(tokenizer)
    if pre is None:
        warnings.warn("llama.cpp has no name for this tokenizer's pre-tokenizer: the GGUF file "
                      "names none, and llama.cpp will split text its default way (its "
                      "tokenization may differ from transformers')", stacklevel=4)
    else:
        writer.add_tokenizer_pre(pre)
    tokens, types = token_types(tokenizer, vocab_size)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        special = gguf.SpecialVocab(tmp, load_merges=True, n_vocab=vocab_size)
    special.add_to_gguf(writer, quiet=True)
