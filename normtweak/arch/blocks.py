"""Running one block alone, on the device the caller chooses.

`capture_block_inputs` runs the model once with every block replaced by a recorder
that returns its input unchanged. Block 0's input (hidden states) is kept for every
batch; the other arguments each block is called with (attention mask, position ids,
rotary position embeddings, alibi, ...) are kept once per batch shape and per block,
because families such as Gemma 3 give different layers different masks and rotary
tables. `run_block` replays them. `device_of` says where a module lives, so a caller
can move a block to its device and back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from normtweak.arch.adapters import get_adapter


class _StopForward(Exception):
    pass


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (else first buffer; else the CPU)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def to_device(obj: Any, device: torch.device | str | None) -> Any:
    """Move every tensor in a nested tuple/list/dict to `device` (None: leave as is)."""
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


@dataclass
class BlockInputs:
    """Inputs of block 0 for every batch, and every block's extra call arguments.

    hidden: list of [batch, seq, hidden] tensors (block 0's inputs), on `store_device`.
    extras: extras[(batch, seq)][l] = (args, kwargs) block l was called with, besides
    the hidden states.
    """

    hidden: list[torch.Tensor]
    extras: dict[tuple[int, int], list[tuple[tuple, dict]]] = field(default_factory=dict)

    def extra(self, block_index: int, shape: torch.Size | tuple) -> tuple[tuple, dict]:
        key = (int(shape[0]), int(shape[1]))
        if key not in self.extras:
            raise ValueError(
                f"no captured block arguments for batch shape {key}; captured: "
                f"{sorted(self.extras)}"
            )
        return self.extras[key][block_index]


def move_outside_blocks(model: nn.Module, device: torch.device | str) -> None:
    """Move all parameters and buffers outside the blocks (embeddings, final norm, head,
    rotary tables) to `device`; the blocks stay where they are."""
    blocks = get_adapter(model).get_blocks(model)
    block_ids = {id(t) for b in blocks for t in list(b.parameters()) + list(b.buffers())}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and id(p) not in block_ids and p.device != torch.device(device):
                p.data = p.data.to(device)
        for name, b in list(module._buffers.items()):
            if b is not None and id(b) not in block_ids:
                module._buffers[name] = b.to(device)


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    device: torch.device | str = "cpu",
    store_device: torch.device | str = "cpu",
    hidden: Any = None,
) -> BlockInputs:
    """Run the model's embeddings on each batch of token ids and record what blocks get.

    Blocks are never executed (each is swapped for a recorder returning its input),
    so only the parts outside the blocks are moved to `device`; the blocks stay
    where they are. batches: LongTensor [batch, seq] each, no padding.
    hidden: where block 0's inputs are appended (default a new list; the pipeline
    passes an ActivationStore so they can go to disk).
    """
    adapter = get_adapter(model)
    blocks = adapter.get_blocks(model)
    move_outside_blocks(model, device)
    captured = BlockInputs(hidden=[] if hidden is None else hidden)
    state: dict[str, Any] = {}

    def recorder(index: int):
        def forward(hidden_states, *args, **kwargs):
            if index == 0:
                captured.hidden.append(hidden_states.detach().to(store_device))
            if state["record"]:
                state["extras"].append((args, kwargs))
            if index == len(blocks) - 1:
                raise _StopForward
            return (hidden_states,) if adapter.block_returns_tuple else hidden_states

        return forward

    for i, block in enumerate(blocks):
        block.forward = recorder(i)
    try:
        for ids in batches:
            ids = ids.to(device)
            key = (int(ids.shape[0]), int(ids.shape[1]))
            state["record"] = key not in captured.extras
            state["extras"] = []
            try:
                model(input_ids=ids, use_cache=False) if adapter.causal else model(input_ids=ids)
            except _StopForward:
                pass
            if state["record"]:
                captured.extras[key] = state["extras"]
    finally:
        for block in blocks:
            del block.forward
    return captured


def run_block(
    block: nn.Module, hidden: torch.Tensor, extra: tuple[tuple, dict]
) -> torch.Tensor:
    """Run one block on hidden states [batch, seq, hidden] with its captured extras."""
    args, kwargs = extra
    device = hidden.device
    out = block(hidden, *to_device(args, device), **to_device(kwargs, device))
    return out[0] if isinstance(out, tuple) else out
