"""Test-session setup shared by every test module.

TRITON_INTERPRET must be set before any Triton kernel is decorated (i.e. before
normtweak.studies.norms is imported), so it is set here, first: on a machine without a GPU
the Triton kernels then run interpreted on CPU tensors, which is how CI tests them.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from normtweak.testing import FAMILIES, tiny_model, tiny_tokenizer


def pytest_configure(config):
    # Here, not in pyproject.toml: pytest imports the classes named in an ini
    # filterwarnings before this file runs, which would import Triton before
    # TRITON_INTERPRET is set.
    config.addinivalue_line("filterwarnings", "ignore::normtweak.io.serving.ServingKernelWarning")


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def make_tiny():
    """Factory: make_tiny(family, seed=0) -> a fresh prepared tiny model."""
    from normtweak.arch import prepare_model

    def make(family: str, seed: int = 0):
        return prepare_model(tiny_model(family, seed=seed))

    return make


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tokenizer):
    """A saved tiny Llama folder (model + tokenizer) shared by the tests that only read it;
    a test that changes it must copy it first."""
    from normtweak.arch import prepare_model

    folder = tmp_path_factory.mktemp("shared") / "tiny"
    prepare_model(tiny_model("llama")).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small .txt corpus (normtweak.testing.tiny_corpus), shared read-only."""
    from normtweak.testing import tiny_corpus

    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")
