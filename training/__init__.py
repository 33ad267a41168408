"""Training side of the project: data, network, GALW training loop, evaluation, export.

Importing `training` itself pulls in no torch, so that the torch-free modules
(`training.preprocess`, `training.data`, `training.evaluate`) serve the server and the tests too.
"""
