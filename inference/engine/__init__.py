"""Conversion (Keras to float ``.tflite``), quantization by recipe, and the runners.

The work that can crash or hang runs in child processes: ``workers/``.
"""
