"""[device] The precisions a converted model can have, and the types of its inputs and outputs.

The converter (:mod:`edgenn.host.convert`) produces them, each target (:mod:`edgenn.targets`) has a
default and may require one, and the CLI offers them: one definition serves all three.
"""

from __future__ import annotations

FP32 = "fp32"
FP16 = "fp16"  # float16 weights, float32 activations
DYNAMIC = "dynamic"  # int8 weights, float activations quantized on the fly (hybrid kernels)
INT8 = "int8"  # weights and activations int8, calibrated on training examples
#: ``edgenn convert --quantize`` values, from the largest file to the smallest.
PRECISIONS = (FP32, FP16, DYNAMIC, INT8)

FLOAT_IO = "float"
INT8_IO = "int8"
UINT8_IO = "uint8"
#: ``edgenn convert --io`` values; only a full int8 model can take 8-bit inputs and outputs.
IO_TYPES = (FLOAT_IO, INT8_IO, UINT8_IO)
