"""[device] TFLite Micro C/C++ sources from an int8 .tflite (``edgenn firmware``).

The generator arrives with its own issue; this package exists now so that the layout of the
project reads as the pipeline and the name is reserved.
"""
