"""Compile every Triton norm kernel variant ahead of time for an H100 (sm_90), no GPU needed.

    python -m normtweak.studies.norms.compile_check     # prints the stages reached per kernel

Triton's bundled LLVM and ptxas take each kernel to a cubin, which catches errors the
interpreter cannot (types, loop-carried values, constexpr branches). Run without
TRITON_INTERPRET=1: under the interpreter the kernels are not JIT functions.
"""

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from normtweak.studies.norms import kernels as k

TARGET = GPUTarget("cuda", 90, 32)


def comp(fn, sig, consts):
    out = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=TARGET)
    return sorted(out.asm.keys())


def main() -> list[tuple]:
    """(kernel, one_pass, stages) for every variant."""
    results = []
    for one in (True, False):
        sig = {"X": "*bf16", "Y": "*bf16", "W": "*bf16", "RSTD": "*fp32", "stride_x": "i32", "stride_y": "i32",
               "N": "i32", "eps": "fp32", "offset": "fp32", "HAS_W": "constexpr", "ONE_PASS": "constexpr", "BLOCK": "constexpr"}
        results.append(("rms fwd", one, comp(k._rms_fwd, sig, {"HAS_W": True, "ONE_PASS": one, "BLOCK": 4096})))
        sig = {"X": "*bf16", "Y": "*bf16", "W": "*bf16", "B": "*bf16", "MEAN": "*fp32", "RSTD": "*fp32", "stride_x": "i32",
               "stride_y": "i32", "N": "i32", "eps": "fp32", "HAS_W": "constexpr", "HAS_B": "constexpr",
               "ONE_PASS": "constexpr", "BLOCK": "constexpr"}
        results.append(("ln fwd", one, comp(k._ln_fwd, sig, {"HAS_W": True, "HAS_B": True, "ONE_PASS": one,
                                                             "BLOCK": 4096})))
        for is_ln in (True, False):
            sig = {"DY": "*bf16", "X": "*bf16", "W": "*bf16", "MEAN": "*fp32", "RSTD": "*fp32", "DX": "*bf16", "DW": "*fp32",
                   "DB": "*fp32", "stride_dy": "i32", "stride_x": "i32", "stride_dx": "i32", "M": "i32", "N": "i32",
                   "rows_per_program": "i32", "offset": "fp32", "IS_LN": "constexpr", "HAS_W": "constexpr",
                   "HAS_B": "constexpr", "ONE_PASS": "constexpr", "BLOCK": "constexpr"}
            results.append(("bwd ln" if is_ln else "bwd rms", one, comp(k._norm_bwd, sig, {"IS_LN": is_ln, "HAS_W": True, "HAS_B": is_ln,
                                                             "ONE_PASS": one, "BLOCK": 4096})))
    return results


if __name__ == "__main__":
    for row in main():
        print(*row)
