"""The grid in words (QuantSpec.grid), as the main job's summary and `quantize` print it, read
from a run's recorded spec."""

from normtweak.config import QuantSpec


def test_the_grid_in_words_from_a_recorded_spec():
    assert QuantSpec().grid == "symmetric, full range"
    # a run recorded before full_range existed was quantized on GPTQ's grid
    old = {"bits": 4, "group_size": 128, "symmetric": True, "method": "rtn"}
    assert QuantSpec.from_record(old).grid == "symmetric, GPTQ grid"
    assert QuantSpec.from_record({**old, "symmetric": False}).grid == "asymmetric"
