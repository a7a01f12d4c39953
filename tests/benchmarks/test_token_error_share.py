"""benchmarks/token_error_share.py: the first token's share and relative errors by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("token_error_share",
                                               ROOT / "benchmarks" / "token_error_share.py")
share_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(share_mod)


def test_share_rows_hand_case():
    # one window, 2 tokens, 2 channels. Token 0: float (30, 40), error^2 9 + 16 = 25;
    # token 1: float (1, 0), error^2 1. MSE = 26 / 4; share 25/26; rel 25/2500 and 1/1.
    f = torch.tensor([[[30.0, 40.0], [1.0, 0.0]]])
    q = torch.tensor([[[27.0, 36.0], [0.0, 0.0]]])
    (row,) = share_mod.share_rows([f], [q])
    assert row["block"] == 0
    assert row["mse"] == pytest.approx(26 / 4)
    assert row["first_token_share"] == pytest.approx(25 / 26)
    assert row["rel_err_first"] == pytest.approx(0.01)
    assert row["rel_err_rest"] == pytest.approx(1.0)
