"""Architecture adapters and running one block alone (`from normtweak import arch`).

adapters.py: where each model family keeps its blocks, norms, linears, embeddings, final
norm and head; norm descriptions; GPT-2 Conv1D <-> nn.Linear; `prepare_model`.
blocks.py: capturing a block's call arguments, `run_block`, `device_of`, `to_device`.
"""

from normtweak.arch.adapters import (
    ADAPTERS,
    Adapter,
    NormInfo,
    block_linears,
    block_norms,
    conv1d_to_linear,
    describe_norm,
    get_adapter,
    is_norm,
    linear_to_conv1d,
    model_context,
    prepare_model,
    supported_model_types,
)
from normtweak.arch.blocks import (
    BlockInputs,
    capture_block_inputs,
    device_of,
    move_outside_blocks,
    run_block,
    to_device,
)

__all__ = [
    "ADAPTERS",
    "Adapter",
    "BlockInputs",
    "NormInfo",
    "block_linears",
    "block_norms",
    "capture_block_inputs",
    "conv1d_to_linear",
    "describe_norm",
    "device_of",
    "get_adapter",
    "is_norm",
    "linear_to_conv1d",
    "model_context",
    "move_outside_blocks",
    "prepare_model",
    "run_block",
    "supported_model_types",
    "to_device",
]
