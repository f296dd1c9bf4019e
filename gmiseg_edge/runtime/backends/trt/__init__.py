"""Native TensorRT backend: device probe (``device``), strongly typed engine build (``build``), runner
(``runner``). Building and running an engine live together, as in Polygraphy's ``backend/trt``."""
