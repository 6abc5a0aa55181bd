"""The base layer: paths, errors, specs, labels, machine facts, child processes.

Nothing here imports another package of ``inference``.
"""
