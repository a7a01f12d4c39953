"""Norm kernels: time and effective bandwidth vs eager torch, torch.compile and a device copy.

    python benchmarks/norms.py                         # GPU: the full grid; CPU: a small one
    python benchmarks/norms.py --hiddens 1024,4096 --rows 4096 --dtypes float32 --threads 1

Prints a Markdown table and writes results/norms_<device>.json. Same as `normtweak bench-norms`.
"""

from __future__ import annotations

import sys

from normtweak.studies.norms.commands import main

if __name__ == "__main__":
    sys.exit(main())
