"""Write a calibration set: the same command as `normtweak generate-data`.

    python examples/generate_data.py --model smollm2-135m --num_samples 8 --seq_len 128 --print
    python examples/generate_data.py --model smollm2-135m --from-text wikipedia --save_dir data/

Self-generation (default) draws a first token in one of --languages, continues it
greedily for 4 tokens, then samples; --from-text takes random windows of a corpus's
train split. The file name says model, method, size, seed and tokenizer hash; by
default it goes to the calibration cache (~/.cache/normtweak/calibration) where
`normtweak run` finds it.
"""

from normtweak.calib.commands import generate_data

if __name__ == "__main__":
    generate_data()
