"""Quantize a model and tweak its norms (the seed project's flags, plus ours).

    python examples/tweak_model.py --model smollm2-135m --data data/CALIB.safetensors \
        --save_dir models/smollm2-w4-tweaked --nbits 4 --lr 1e-5 --scale 5
    python examples/tweak_model.py --model smollm2-135m --data data/CALIB.safetensors \
        --save_dir models/grid --grid-search-lr 1e-6 1e-5 1e-4 --grid-search-scale 0 5

Same options as `normtweak tweak --help`.
"""

from normtweak.tweak.commands import tweak_cmd

if __name__ == "__main__":
    tweak_cmd(prog_name="tweak_model.py")
