"""Child-process entry points: ``python -m inference.engine.workers.NAME``.

``convert`` (Keras to float), ``quantize`` (recipes), ``inspect`` (a file
someone uploaded) and ``sensitivity`` (the one-op-at-a-time scan).
"""
