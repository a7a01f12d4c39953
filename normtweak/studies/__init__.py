"""Side studies, apart from the method: the precision study (small classifiers at FP32 / FP16 /
BF16 / INT8 as quantization targets), the seed project's toy INT8 norm and W8A8 linears, and
Triton RMSNorm / LayerNorm kernels (forward and backward) with the LayerNorm <-> RMSNorm swap."""
