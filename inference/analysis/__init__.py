"""What quantization does: benchmark, evaluation, the layer report, sensitivity, search."""
