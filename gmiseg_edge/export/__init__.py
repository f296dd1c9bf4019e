"""Export (torch, onnx): merged ONNX graphs, validation against PyTorch, FP16, manifest, TensorRT engines."""
