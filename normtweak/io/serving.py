"""Which serving kernels a quantized model can use: warnings, never refusals."""

from __future__ import annotations

import warnings

from torch import nn

MARLIN_BITS = (4, 8)
MARLIN_GROUP_SIZES = (-1, 32, 64, 128)
MARLIN_IN_MULTIPLE = 128


class ServingKernelWarning(UserWarning):
    """A quantized model that serving stacks load, but not with their fastest kernels."""


def marlin_problems(bits: int, group_size: int, in_features: int) -> list[str]:
    """Why vLLM's Marlin kernels cannot serve a layer (empty list: they can)."""
    problems = []
    if bits not in MARLIN_BITS:
        problems.append(f"{bits} bits (Marlin needs 4 or 8)")
    if group_size not in MARLIN_GROUP_SIZES and group_size != 0:
        problems.append(f"group size {group_size} (Marlin needs -1, 32, 64 or 128)")
    if in_features % MARLIN_IN_MULTIPLE:
        problems.append(f"in_features {in_features} not divisible by {MARLIN_IN_MULTIPLE}")
    return problems


def serving_report(model: nn.Module) -> dict[str, list[str]]:
    """QuantLinear name -> Marlin problems, for the layers that have any."""
    from normtweak.quant.linear import QuantLinear

    report = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            problems = marlin_problems(m.bits, m.group_size, m.in_features)
            if problems:
                report[name] = problems
    return report


def warn_serving_kernels(model: nn.Module) -> dict[str, list[str]]:
    """Warn once (listing the reasons) when some layers cannot use vLLM's Marlin kernels."""
    report = serving_report(model)
    if report:
        reasons = sorted({p for ps in report.values() for p in ps})
        warnings.warn(f"{len(report)} quantized layers cannot use vLLM's fast Marlin kernels "
                      f"({'; '.join(reasons)}; e.g. {next(iter(report))}): vLLM falls back to "
                      f"slower kernels or refuses them; transformers is unaffected",
                      ServingKernelWarning, stacklevel=3)
    return report
