"""ONNX Runtime backend: the exported graphs on the best execution provider that initialises (``runner``)."""
