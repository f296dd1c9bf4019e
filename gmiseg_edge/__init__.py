"""gmiseg-edge: GMISeg (SAM + Loose LoRA) from training to fast inference on the edge."""

__version__ = "0.1.0"
