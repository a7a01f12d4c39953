"""Architecture adapters: every tiny family's blocks, run alone, reproduce the full model."""

import pytest
import torch
from torch import nn

from normtweak import arch
from normtweak.testing import tiny_batch, tiny_config


def _reference_hidden_states(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states


def test_blocks_run_alone_reproduce_hidden_states(make_tiny, family):
    model = make_tiny(family)
    adapter = arch.get_adapter(model)
    ids = tiny_batch(2, 16)
    ref = _reference_hidden_states(model, ids)
    captured = arch.capture_block_inputs(model, [ids])
    hidden = captured.hidden[0]
    torch.testing.assert_close(hidden, ref[0], atol=1e-5, rtol=0)
    blocks = adapter.get_blocks(model)
    with torch.no_grad():
        for i, block in enumerate(blocks):
            hidden = arch.run_block(block, hidden, captured.extra(i, hidden.shape))
            expected = ref[i + 1]
            got = hidden
            if i == len(blocks) - 1 and adapter.final_norm:
                got = adapter.get_final_norm(model)(hidden)  # HF applies the final norm there
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_capture_keeps_one_input_per_batch_and_extras_per_shape(make_tiny):
    model = make_tiny("llama")
    batches = [tiny_batch(2, 16, seed=s) for s in range(3)] + [tiny_batch(1, 16)]
    captured = arch.capture_block_inputs(model, batches)
    assert [h.shape for h in captured.hidden] == [torch.Size([2, 16, 64])] * 3 + [torch.Size([1, 16, 64])]
    assert sorted(captured.extras) == [(1, 16), (2, 16)]
    with pytest.raises(ValueError, match="batch shape"):
        captured.extra(0, (4, 16))


def test_capture_never_runs_blocks(make_tiny):
    model = make_tiny("llama")
    calls = []
    for block in arch.get_adapter(model).get_blocks(model):
        for _, linear in arch.block_linears(block):
            linear.register_forward_pre_hook(lambda *a: calls.append(1))
    arch.capture_block_inputs(model, [tiny_batch()])
    assert calls == []


def test_norms_and_linears_found(make_tiny, family):
    model = make_tiny(family)
    adapter = arch.get_adapter(model)
    block = adapter.get_blocks(model)[0]
    norms = arch.block_norms(block)
    linears = arch.block_linears(block)
    assert len(norms) >= 2
    assert len(linears) >= 4 and all(type(m) is nn.Linear for _, m in linears)
    for _, m in norms:
        info = arch.describe_norm(m, adapter)
        assert info.eps > 0
        assert info.kind == ("layer" if isinstance(m, nn.LayerNorm) else "rms")
        assert info.offset == (1.0 if family == "gemma" else 0.0)


def test_unknown_architecture_names_supported_ones():
    class Config:
        model_type = "mamba"

    with pytest.raises(ValueError, match="unsupported architecture 'mamba'.*llama"):
        arch.get_adapter(Config())


def test_gpt2_conv1d_round_trip_keeps_outputs(make_tiny):
    from normtweak.testing import tiny_model

    original = tiny_model("gpt2")
    ids = tiny_batch()
    with torch.no_grad():
        before = original(input_ids=ids).logits
        converted = arch.prepare_model(tiny_model("gpt2"))
        mid = converted(input_ids=ids).logits
        arch.linear_to_conv1d(converted, arch.get_adapter(converted))
        after = converted(input_ids=ids).logits
    torch.testing.assert_close(mid, before, atol=1e-5, rtol=0)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert tiny_config("gpt2").model_type == "gpt2"


def test_device_of_is_the_first_parameter_else_buffer_else_cpu():
    import torch
    from torch import nn

    from normtweak.arch import device_of

    assert device_of(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    only_buffer = nn.Module()
    only_buffer.register_buffer("b", torch.zeros(1, device="meta"))
    assert device_of(only_buffer) == torch.device("meta")
    assert device_of(nn.ReLU()) == torch.device("cpu")
