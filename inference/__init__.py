"""The exported model's contract and runtime, without torch (numpy, Pillow, ONNX Runtime).

- ``inference.preprocess``: resize-and-pad and the normalisation constants;
- ``inference.boxes``: box geometry;
- ``inference.card``: the graph's input/output names and the model card (``ModelCard``);
- ``inference.imaging``: decoding uploaded image bytes, and what is refused (``ImageRejected``);
- ``inference.engine``: the ONNX Runtime engine (``Engine``), boxes in the image's own pixels;
- ``inference.files``: atomic writes and file hashes.

Training writes what this package reads; the service, the gallery and the evaluator of exported
models use it. See docs/ARCHITECTURE.md, "Packages and their contracts".
"""
