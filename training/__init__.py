"""Training side of the project: data, network, GALW training loop, evaluation, export.

Importing `training` itself pulls in no torch, so that the torch-free modules (`training.data`'s
loaders, `training.evaluate`, `training.synth`) serve the benchmarks and the tests too.
"""
