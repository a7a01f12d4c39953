"""Make transformers refuse normtweak 0.1 folders instead of loading random linears.

Folders from normtweak 0.1 say `quant_method: "normtweak"`; transformers does not know it,
warns "we will skip the quantization" and random-initializes every quantized linear. Once
`normtweak.io` is imported, that quant_method is registered with transformers as a
quantizer that raises a ValueError naming the fix. (Without normtweak imported,
transformers' load report lists those weights as MISSING; see the README.)
"""

from __future__ import annotations

MESSAGE = ("{method!r} folders are normtweak's own layout, which transformers cannot load (it "
           "would initialize the quantized linears randomly). Load it with "
           "normtweak.load_quantized(path), or convert it once: normtweak export --model PATH "
           "--format {target} --save_dir NEW")


def register_guards() -> None:
    """Register a refusing quantizer for our own quant_methods (idempotent). normtweak.io calls
    it when imported."""
    from normtweak.io.format import LEGACY_METHOD, NATIVE_METHOD  # (io imports this module)

    targets = {LEGACY_METHOD: "compressed-tensors", NATIVE_METHOD: "float"}
    from transformers.quantizers import HfQuantizer
    from transformers.quantizers.auto import (
        AUTO_QUANTIZATION_CONFIG_MAPPING,
        AUTO_QUANTIZER_MAPPING,
    )
    from transformers.utils.quantization_config import QuantizationConfigMixin

    for method in (LEGACY_METHOD, NATIVE_METHOD):
        if method in AUTO_QUANTIZER_MAPPING:
            continue

        class Config(QuantizationConfigMixin):
            quant_method_name = method

            def __init__(self, _method=method, **kwargs):
                self.quant_method = kwargs.get("quant_method", _method)
                self.details = kwargs

            @classmethod
            def from_dict(cls, config_dict, return_unused_kwargs=False, **kwargs):
                config = cls(**config_dict)
                return (config, kwargs) if return_unused_kwargs else config

        class Refuse(HfQuantizer):
            requires_calibration = True

            def __init__(self, quantization_config, **kwargs):
                method = quantization_config.quant_method
                raise ValueError(MESSAGE.format(method=method, target=targets[method]))

            def is_serializable(self):  # abstract in HfQuantizer; never reached
                return False

            @property
            def is_trainable(self):
                return False

        AUTO_QUANTIZATION_CONFIG_MAPPING[method] = Config
        AUTO_QUANTIZER_MAPPING[method] = Refuse
