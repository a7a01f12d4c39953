"""The precision study (same flags as `normtweak precision --help`).

    python examples/precision_study.py --model classifier --data rotten_tomatoes \\
        --precisions fp32,bf16,int8-toy,w4-rtn,w4-rtn-tweak --seeds 0,1,2
"""

from normtweak.studies.precision.commands import precision_cmd

if __name__ == "__main__":
    precision_cmd()
