"""Calibration data: self-generated (language-aware, LLM-QAT style) or windows of a corpus,
stored as a CalibrationSet in a .safetensors file with metadata."""

from normtweak.calib.generate import SamplingSpec, generate_calibration
from normtweak.calib.languages import DEFAULT_LANGUAGES, in_languages, token_languages
from normtweak.calib.store import CalibrationSet, load_calibration, vocab_hash
from normtweak.calib.text import calibration_from_text

__all__ = [
    "DEFAULT_LANGUAGES",
    "CalibrationSet",
    "SamplingSpec",
    "calibration_from_text",
    "generate_calibration",
    "in_languages",
    "load_calibration",
    "token_languages",
    "vocab_hash",
]
