"""Files and data: images and preprocessing, ``.tflite`` files and their metadata.

Also browser-ready files, one-op models, quantization recipes, calibration
sets and PyTorch weights. Imports only :mod:`inference.core`; generated code
lives in ``_vendor/``.
"""
