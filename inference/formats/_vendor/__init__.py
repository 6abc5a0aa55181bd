"""Generated code kept unchanged: flatc's TFLite metadata schema."""
