"""INT8 calibration (onnx, onnxruntime): calibration sets, Q/DQ quantisation, accuracy checks."""
