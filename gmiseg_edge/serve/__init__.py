"""Serving: the torch-free runtime behind a real Triton Inference Server (PyTriton), a model repository for a
stock Triton fleet, and a client.

- :mod:`.protocol`: the served models' names, tensors and embedding keys (shared by server and client);
- :mod:`.handlers`: what each served model does with a :class:`~gmiseg_edge.runtime.Predictor` (no Triton);
- :mod:`.app`: binds the handlers to Triton through PyTriton (``gmiseg-edge serve``);
- :mod:`.client`: a tritonclient (gRPC) client; :mod:`.bench`: the latency table over the network;
- :mod:`.repository`: ``gmiseg-edge export-triton`` (onnxruntime / tensorrt_plan models and a BLS pipeline).

PyTriton pins numpy<2, so the server runs in an environment of its own (README, "Serving"); nothing here imports
pytriton or tritonclient at module level.
"""
