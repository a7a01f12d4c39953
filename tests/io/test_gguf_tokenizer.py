"""The GGUF file carries the tokenizer as llama.cpp needs it: its pre-tokenizer's name, the chat
template, the token types of added tokens, merges and special ids. With llama-cpp-python
installed, llama.cpp's tokenization of a text equals transformers'."""

import warnings

import gguf
import pytest
import transformers

from normtweak.config import QuantSpec, RunSpec
from normtweak.io import round_scales, save_quantized
from normtweak.io.export import export_quantized
from normtweak.quant.model import quantize_model

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TEXT = ('He said "hello" -- and she said: "I\'ll be there at 10:30!"\n\n'
        "  Indented  text, numbers 12345 and 3.14159; ümlauts, 漢字 and emoji 🙂.")


def _exported(tokenizer, vocab_size, tmp_path):
    config = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=64, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=128,
                                      vocab_size=vocab_size, max_position_embeddings=256,
                                      tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config).eval()
    spec = QuantSpec(bits=4, group_size=32, symmetric=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_model(model, spec, run=RunSpec(progress=False))
        round_scales(model, "gguf")
        save_quantized(model, tokenizer, tmp_path / "q", quant=spec)
        export_quantized(tmp_path / "q", "gguf", tmp_path / "g")
    return tmp_path / "g" / "model.gguf", [str(w.message) for w in caught]


def _fields(path):
    reader = gguf.GGUFReader(str(path))
    return {name: f.contents() for name, f in reader.fields.items()
            if name.startswith("tokenizer.")}


def test_token_types_template_and_special_ids(tmp_path):
    from normtweak.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer,
                                               bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                               pad_token="<pad>")
    tok.add_tokens(["<|im_start|>", "<|im_end|>", "hello_world"])  # not flagged special
    tok.chat_template = TEMPLATE
    path, said = _exported(tok, 400, tmp_path)
    assert any("no name for this tokenizer's pre-tokenizer" in w for w in said)
    f = _fields(path)
    assert "tokenizer.ggml.pre" not in f  # not a tokenizer llama.cpp names: said, not guessed
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.chat_template"] == TEMPLATE
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 400
    kind = {tokens[i]: gguf.TokenType(t).name for i, t in enumerate(types)}
    # flagged special, or <|...|> (llama.cpp's rule): control; other added tokens: user-defined
    assert kind["<|endoftext|>"] == kind["<pad>"] == "CONTROL"
    assert kind["<|im_start|>"] == kind["<|im_end|>"] == "CONTROL"
    assert kind["hello_world"] == "USER_DEFINED" and kind["Ġthe"] == "NORMAL"
    n = len(tok)
    assert all(gguf.TokenType(t).name == "UNUSED" for t in types[n:])  # padding up to vocab
    assert f["tokenizer.ggml.bos_token_id"] == tok.bos_token_id
    assert f["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert len(f["tokenizer.ggml.merges"]) == len(
        __import__("json").loads(tok.backend_tokenizer.to_str())["model"]["merges"])


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from normtweak.assets import resolve_model

    return transformers.AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


@pytest.mark.slow
def test_smollm2_gguf_names_its_pre_tokenizer_and_chat_format(smollm2_tokenizer, tmp_path):
    tok = smollm2_tokenizer
    path, said = _exported(tok, 49152, tmp_path)
    assert not any("pre-tokenizer" in w for w in said)
    f = _fields(path)
    assert f["tokenizer.ggml.pre"] == "smollm"  # llama.cpp's own name for this tokenizer
    assert f["tokenizer.chat_template"] == tok.chat_template
    types = f["tokenizer.ggml.token_type"]
    added = tok.added_tokens_decoder
    control = [i for i, t in added.items() if t.special or t.content.startswith("<|")]
    assert len(added) == 17 and len(control) == 17
    assert all(gguf.TokenType(types[i]).name == "CONTROL" for i in control)


@pytest.mark.slow
def test_llama_cpp_tokenizes_like_transformers(smollm2_tokenizer, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    tok = smollm2_tokenizer
    path, _ = _exported(tok, 49152, tmp_path)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in (TEXT, 'a "quoted" word', "<|im_start|>user\nHi<|im_end|>"):
        ours = tok.encode(text, add_special_tokens=False)
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert theirs == ours, text
