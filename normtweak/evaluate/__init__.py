"""Evaluation: pinned perplexity, lm-eval on in-memory models, per-layer deltas, reports.

`normtweak.evaluate.perplexity` is the function (its module is
`normtweak.evaluate.perplexity` too: import helpers with `from ... import`).
"""

from normtweak.evaluate.perplexity import PerplexityResult, perplexity, split_perplexity

__all__ = ["PerplexityResult", "perplexity", "split_perplexity"]
