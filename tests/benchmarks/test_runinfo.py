"""What a benchmark run records about its machine: the CPU model and its bf16 instructions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import runinfo  # noqa: E402

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8
"""


def test_cpu_reads_model_and_bf16_flags():
    assert runinfo.cpu(CPUINFO) == {"model": "Intel(R) Xeon(R) Processor",
                                    "bf16": ["avx512_bf16", "amx_bf16"]}
    amd = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 avx512f\n"
    assert runinfo.cpu(amd) == {"model": "AMD EPYC 7B13", "bf16": []}
