"""Losses that pull a quantized block's output towards the float block's output.

All take y_float, y_quant: [batch, tokens, channels] and return a scalar (mean over
the batch). Statistics are per sample and per channel, over the tokens of a sample,
computed in float32 whatever the activation dtype.
"""

from __future__ import annotations

import torch

STD_EPS = 1e-12  # added to a variance before its square root (dist_mse): finite gradient at 0


def channel_stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and (population) variance over tokens: two [batch, C]."""
    y = y.float()
    mean = y.mean(dim=1)
    var = (y - mean.unsqueeze(1)).pow(2).mean(dim=1)
    return mean, var


def distribution_loss(y_float: torch.Tensor, y_quant: torch.Tensor) -> torch.Tensor:
    """The paper's channel-wise distribution loss.

    L = (1/C) * sum_c ( |mu_f,c - mu_q,c| + |var_f,c - var_q,c| ), averaged over samples.
    """
    mf, vf = channel_stats(y_float)
    mq, vq = channel_stats(y_quant)
    return ((mf - mq).abs() + (vf - vq).abs()).mean()


def distribution_mse_loss(y_float: torch.Tensor, y_quant: torch.Tensor) -> torch.Tensor:
    """The authors' code variant: MSE of the channel means plus MSE of the channel stds."""
    mf, vf = channel_stats(y_float)
    mq, vq = channel_stats(y_quant)
    # sqrt(var + eps): a finite gradient where a channel is constant (var = 0)
    std_f, std_q = (vf + STD_EPS).sqrt(), (vq.clamp_min(0) + STD_EPS).sqrt()
    return (mf - mq).pow(2).mean() + (std_f - std_q).pow(2).mean()


def output_mse_loss(y_float: torch.Tensor, y_quant: torch.Tensor) -> torch.Tensor:
    """Plain mean squared error of the block outputs (as llmc tweaks)."""
    return (y_float.float() - y_quant.float()).pow(2).mean()


LOSSES = {
    "dist": distribution_loss,
    "dist_mse": distribution_mse_loss,
    "mse": output_mse_loss,
}


def get_loss(name: str):
    """The loss function called `name` ('dist', 'dist_mse' or 'mse')."""
    if name not in LOSSES:
        raise ValueError(f"unknown tweak loss {name!r}; choose from {sorted(LOSSES)}")
    return LOSSES[name]
