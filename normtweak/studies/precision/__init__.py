"""Precision study: small classifiers at FP32/FP16/BF16/INT8 and as quantization targets.

    normtweak precision --model classifier --data rotten_tomatoes \\
        --precisions fp32,bf16,int8-toy,w4-rtn,w4-rtn-tweak
"""
