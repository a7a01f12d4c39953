import pytest


@pytest.fixture(autouse=True)
def pytorch_norm_path(monkeypatch):
    """These tests train models: run the norms' PyTorch path, not the interpreted Triton
    kernels (tests/norms checks those), which are 15-100x slower on the CPU."""
    monkeypatch.setattr("normtweak.studies.norms.ops.INTERPRET", False)
