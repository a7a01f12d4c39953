"""Per-block output stats against running the model with hidden states exposed."""

import pytest
import torch

from normtweak.evaluate.deltas import layer_deltas, layer_stats, plot_deltas
from normtweak.testing import tiny_batch


@pytest.mark.parametrize("fam", ["gpt2", "llama", "bert"])
def test_layer_stats_match_hidden_states(make_tiny, fam):
    model = make_tiny(fam)
    ids = tiny_batch(3, 12)
    stats = layer_stats(model, ids, batch_size=2)
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    # hidden_states[l + 1] is block l's output, except the last one, which some families
    # report after the final norm; compare the blocks before it.
    assert len(stats) == len(hs) - 1
    for (mean, var), h in list(zip(stats, hs[1:]))[:-1]:
        h = h.double()
        assert mean == pytest.approx(h.mean().item(), rel=1e-4, abs=1e-6)
        assert var == pytest.approx(h.var(unbiased=False).item(), rel=1e-4)


def test_deltas_and_plot(tmp_path):
    ref, other = [(0.0, 1.0), (0.5, 2.0)], [(0.1, 1.5), (0.25, 2.0)]
    rows = layer_deltas(ref, other)
    assert [r["d_mean"] for r in rows] == pytest.approx([0.1, -0.25])
    assert [r["d_var"] for r in rows] == pytest.approx([0.5, 0.0])
    with pytest.raises(ValueError, match="same architecture"):
        layer_deltas(ref, other[:1])
    path = plot_deltas({"rtn": rows}, tmp_path / "d.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
