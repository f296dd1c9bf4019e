"""PyTorch reference backend (``runner``): the exported model rebuilt in torch, FP32, for parity checks."""
