"""The one block walker (`BlockPass`) and what it shares with its steps.

blockpass.py: capturing block 0's inputs (`prepare_start`), walking the blocks in order.
state.py: one block's turn (`BlockState`), the `Step` protocol, running a block over batches.
activations.py: where activations live (memory within a budget, else a memory-mapped file).
"""

from normtweak.walk.blockpass import BlockLoader, BlockPass, Start, as_input_ids, prepare_start
from normtweak.walk.state import (
    BlockResult,
    BlockState,
    NonFiniteActivationError,
    Step,
    check_finite,
    run_all,
)

__all__ = ["BlockLoader", "BlockPass", "BlockResult", "BlockState", "NonFiniteActivationError",
           "Start", "Step", "as_input_ids", "check_finite", "prepare_start", "run_all"]
