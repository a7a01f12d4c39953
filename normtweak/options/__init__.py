"""The command-line options shared by the commands, defined once.

The options are the specs' fields: `quant_options` are QuantSpec's, `tweak_options`
TweakSpec's, `run_options` and `checkpoint_options` RunSpec's, with the dataclasses'
defaults, so the command line cannot disagree with the Python API; `quant_spec`,
`tweak_spec` and `run_spec` build the specs back, and an option that has no effect in the
combination given is refused by name (`refuse`). Every command that quantizes takes the
same options with the same names, aliases and defaults. The original project's spellings
(`--quantizer`, `--nbits`, `--save_dir`, `--num_samples`, `--grid-search-lr`, ...) are
aliases, and list options take space- or comma-separated values
(`--grid-search-lr 0 0.0001 0.00001` or `--grid-search-lr 0,0.0001,0.00001`).
"""

from normtweak.common.errors import USER_ERRORS
from normtweak.options.command import Command, command_line
from normtweak.options.groups import (
    CALIBRATION_OPTIONS,
    DEFAULT_DEVICE,
    DEFAULT_EVAL_WINDOWS,
    DEFAULT_NUM_SAMPLES,
    DEFAULT_SCHEME,
    FROM_TEXT_HELP,
    GPTQ_OPTIONS,
    MODEL_HELP,
    NUM_SAMPLES_HELP,
    QUANT_OPTIONS,
    SEQ_LEN_HELP,
    SEQ_LEN_TWEAK_HELP,
    TWEAK_EVAL_WINDOWS,
    calibration_options,
    checkpoint_options,
    device_option,
    eval_windows_option,
    model_option,
    overwrite_option,
    parse_floats,
    quant_options,
    run_options,
    save_dir_option,
    spec_default,
    tweak_options,
)
from normtweak.options.specs import (
    check_writable,
    flag,
    given,
    quant_spec,
    refuse,
    run_spec,
    tweak_spec,
)

__all__ = ["CALIBRATION_OPTIONS", "DEFAULT_DEVICE", "DEFAULT_EVAL_WINDOWS", "DEFAULT_NUM_SAMPLES",
           "DEFAULT_SCHEME", "FROM_TEXT_HELP", "GPTQ_OPTIONS", "MODEL_HELP", "NUM_SAMPLES_HELP",
           "QUANT_OPTIONS", "SEQ_LEN_HELP", "SEQ_LEN_TWEAK_HELP", "TWEAK_EVAL_WINDOWS",
           "USER_ERRORS", "Command", "calibration_options", "check_writable",
           "checkpoint_options", "command_line", "device_option", "eval_windows_option", "flag",
           "given", "model_option", "overwrite_option", "parse_floats", "quant_options",
           "quant_spec", "refuse", "run_options", "run_spec", "save_dir_option", "spec_default",
           "tweak_options", "tweak_spec"]
