"""Builders of Keras models: the EfficientNet-Lite port, keras.applications, Fashion-MNIST."""
