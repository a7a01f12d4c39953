"""Block offloading: lazy loading from safetensors gives the same model; one block at a time."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from normtweak import arch
from normtweak.arch import prepare_model
from normtweak.cli import main
from normtweak.config import QuantSpec, RunSpec, TweakSpec
from normtweak.testing import tiny_batch, tiny_model
from normtweak.tweak.offload import load_lazily
from normtweak.tweak.pipeline import tweak_model

QUANT, SPEC = QuantSpec(bits=3, group_size=16), TweakSpec(lr=1e-2)


def _ids():
    return torch.cat([tiny_batch(1, 24, seed=s) for s in range(3)])


def _logits(model):
    with torch.no_grad():
        return model(input_ids=tiny_batch(2, 16, seed=3)).logits


def _shard(folder):
    """Rewrite a single-file checkpoint as one shard per block plus an index."""
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    shards = {}
    for name, t in state.items():
        key = name.split(".")[2] if name.startswith("model.layers.") else "rest"
        shards.setdefault(f"model-{key}.safetensors", {})[name] = t
    for file, tensors in shards.items():
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {n: f for f, ts in shards.items() for n in ts}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("family, sharded", [("llama", False), ("llama", True), ("opt", False),
                                             ("gemma", False)])
def test_lazy_loading_gives_the_eager_model(tmp_path, tokenizer, family, sharded):
    tiny_model(family).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    if sharded:
        _shard(tmp_path)
    lazy, tok, loader = load_lazily(tmp_path)
    assert tok is not None
    blocks = arch.get_adapter(lazy).get_blocks(lazy)
    assert all(p.is_meta for b in blocks for p in b.parameters())  # nothing of the blocks loaded
    assert not any(p.is_meta for n, p in lazy.named_parameters() if ".layers." not in n)
    loaded = []
    real = loader.__call__

    def spy(index, block):
        loaded.append((index, sum(not p.is_meta for b in blocks for p in b.parameters())))
        real(index, block)

    eager = prepare_model(tiny_model(family))
    tweak_model(eager, _ids(), QUANT, SPEC, run=RunSpec(progress=False))
    tweak_model(lazy, _ids(), QUANT, SPEC, block_loader=spy, run=RunSpec(progress=False))
    torch.testing.assert_close(_logits(lazy), _logits(eager), atol=0, rtol=0)
    # each block was filled on its turn: before block i's turn, only blocks < i held weights
    first_calls = {}
    for index, real_params in loaded:
        first_calls.setdefault(index, real_params)
    per_block = len(list(blocks[0].parameters()))
    assert first_calls == {i: i * per_block for i in range(len(blocks))}


def test_lazy_loading_refuses_what_it_cannot_do(tmp_path, tokenizer):
    tiny_model("gpt2").save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="nn.Linear layers, not 'gpt2'"):
        load_lazily(tmp_path / "gpt2")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_lazily(tmp_path / "nowhere")
    folder = tmp_path / "llama"
    tiny_model("llama").save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model, _, loader = load_lazily(folder)
    with pytest.raises(ValueError, match="block 1: the checkpoint has no tensors"):
        tweak_model(model, _ids(), QUANT, SPEC, block_loader=loader, run=RunSpec(progress=False))


def test_cli_lazy_load_and_activation_budget_match_the_default_run(tmp_path, tokenizer):
    from normtweak.io import load_quantized

    tiny_model("llama").save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog. "
                                  * 6 for i in range(30)))
    base = ["tweak", "--model", str(tmp_path / "m"), "--from-text", str(corpus), "--num-samples",
            "2", "--seq-len", "32", "--nbits", "3", "--group-size", "16", "--lr", "1e-2"]
    runner = CliRunner()
    res = runner.invoke(main, base + ["--save_dir", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, base + ["--save_dir", str(tmp_path / "b"), "--lazy-load",
                                      "--activation-budget", "1KiB"])
    assert res.exit_code == 0, res.output
    a, _ = load_quantized(tmp_path / "a")
    b, _ = load_quantized(tmp_path / "b")
    torch.testing.assert_close(_logits(b), _logits(a), atol=0, rtol=0)
    res = runner.invoke(main, base + ["--save_dir", str(tmp_path / "c"), "--activation-budget",
                                      "lots"])
    assert res.exit_code == 1 and "cannot read a size from 'lots'" in res.output
    res = runner.invoke(main, base + ["--save_dir", str(tmp_path / "c"), "--lazy-load",
                                      "--grid-search-lr", "1e-3,1e-2"])
    assert res.exit_code == 1 and "--lazy-load has no effect in a grid search" in res.output
    assert not (tmp_path / "c").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_holds_one_block_at_a_time():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, vocab_size=384)
    torch.manual_seed(0)
    model = prepare_model(AutoModelForCausalLM.from_config(config))
    blocks = arch.get_adapter(model).get_blocks(model)
    block_bytes = sum(p.numel() * 4 for p in blocks[0].parameters())
    outside = sum(p.numel() * 4 for n, p in model.named_parameters() if ".layers." not in n)
    torch.cuda.reset_peak_memory_stats()
    tweak_model(model, _ids(), QuantSpec(bits=4, group_size=128), TweakSpec(lr=1e-4), run=RunSpec(device="cuda", progress=False))
    peak = torch.cuda.max_memory_allocated()
    # one float block, its dequantized copy and quantized buffers, plus the parts outside the
    # blocks during the capture: far below the 8 blocks of the whole model
    assert peak < outside + 3 * block_bytes + 64 * 2**20, (peak, block_bytes)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())


def test_lazy_loading_refuses_nan_weights_and_foreign_shards(tmp_path, make_tiny, tokenizer):
    """--lazy-load reads a block only at its turn: a NaN there is refused naming the tensor,
    and a shard index naming a file outside the folder is refused before anything loads."""
    import json

    from normtweak.tweak.offload import load_lazily

    model = make_tiny("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    lazy, _, loader = load_lazily(tmp_path / "m")
    blocks = lazy.model.layers
    loader(0, blocks[0])
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.down_proj\.weight holds NaN"):
        loader(1, blocks[1])
    (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}}))
    with pytest.raises(ValueError, match="not a file inside"):
        load_lazily(tmp_path / "m")
