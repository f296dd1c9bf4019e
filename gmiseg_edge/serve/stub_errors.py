"""Errors of the served models as error *responses* with a client-error status, inside PyTriton's stub.

PyTriton 0.7's stub (its ``model.py``, which Triton's Python backend runs for each served model) raises
``TritonModelException`` when an inference callable raises. Triton then answers 500/INTERNAL with the stub's
traceback around the model's message, and its Python backend keeps that request's input tensors in its shared
memory (triton-inference-server/server#7481: every refused 4097² image, 50 MB, stayed in the server). The stub's
source gets this module appended (:func:`stub_source`; ``gmiseg_edge.serve.app`` hands it to Triton in place of
PyTriton's), and :func:`answer_errors` wraps the stub's ``execute`` so that an error becomes one error response a
request, which the backend frees as it frees an answer:

- a refusal of the served models (``ServeRequestError``: a bad request, the message names the input) goes out as
  its one line with status INVALID_ARG: HTTP 400, gRPC INVALID_ARGUMENT;
- an input with no values is refused here, before PyTriton's stub copies it (it cannot: ``memoryview: cannot cast
  view with zeros in shape or strides``), with the message :func:`empty_input_message` gives (the server's own
  check says the same);
- any other error (a fault of the server) stays INTERNAL, with PyTriton's text.

Triton counts a request answered with an error response as a success (``nv_inference_request_success``), so the
stub counts them itself in the Prometheus counter :data:`ERROR_METRIC` (Triton's custom metrics API).

This module imports only the standard library: it runs inside the stub, where gmiseg-edge need not be importable.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Any

REFUSAL_CLASS = "ServeRequestError"  # the name of gmiseg_edge.serve.app.ServeRequestError
_REFUSAL = re.compile(REFUSAL_CLASS + r": ([^\n]*)")
STUB_FILE = "model.py"  # PyTriton's stub, among the files it hands Triton for each model
ERROR_METRIC = "gmiseg_edge_request_errors"  # Prometheus counter, labels model and status
ERROR_METRIC_HELP = ("Requests a served model answered with an error response (status INVALID_ARG: refused as the "
                     "client's fault; INTERNAL: the server's); Triton counts them in nv_inference_request_success")


class _NoMetric:
    def increment(self, _value: int) -> None:
        pass


def empty_input_message(name: str, shape: Any, optional: bool) -> str:
    """The refusal of an input with no values (``name``: how it is named, e.g. ``input 'points'``); an optional
    input (a prompt) is better left out."""
    hint = "leave it out instead" if optional else "send a non-empty one"
    return f"{name}: empty, shape {[int(n) for n in shape]}; {hint}"


def refusal_line(text: str) -> str | None:
    """The served model's one-line refusal inside an error text of PyTriton (None: the text holds none)."""
    found = _REFUSAL.findall(text.replace("\\n", "\n"))
    return found[-1].strip() if found else None


def answer_errors(model_class: Any, pb_utils: Any) -> None:
    """Wrap ``model_class.execute`` (PyTriton's stub model) so that errors become error responses (module
    docstring); ``pb_utils``: Triton's ``triton_python_backend_utils``."""
    execute = model_class.execute
    if getattr(execute, "answers_errors", False):
        return

    def error(message: str, invalid: bool) -> Any:
        """Looked up when needed: the stub fills ``pb_utils`` in only after it imported the model's file."""
        code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if invalid else None  # Triton 23.06 on
        return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)

    counters: dict[tuple[str, bool], Any] = {}  # (model, invalid) -> its metric, in the family made first
    families: list[Any] = []

    def count(self: Any, invalid: bool, requests: int) -> None:
        """Add to :data:`ERROR_METRIC`: Triton counts a request answered with an error response as a success."""
        config = getattr(self, "_model_config", None) or {}
        key = (str(config.get("name", "")), invalid)
        try:
            if key not in counters:
                if not families:
                    families.append(pb_utils.MetricFamily(name=ERROR_METRIC, description=ERROR_METRIC_HELP,
                                                          kind=pb_utils.MetricFamily.COUNTER))
                counters[key] = families[0].Metric(labels={"model": key[0],
                                                           "status": "INVALID_ARG" if invalid else "INTERNAL"})
            counters[key].increment(requests)
        except Exception:  # Triton before custom metrics (23.05), or the API changed: the count is only lost
            counters[key] = _NoMetric()

    def empty_input(self: Any, request: Any) -> str | None:
        config = getattr(self, "_model_config", None) or {}
        optional = {item.get("name"): bool(item.get("optional")) for item in config.get("input", [])}
        for tensor in request.inputs():
            shape = list(tensor.shape())
            if any(int(n) == 0 for n in shape):
                name = tensor.name()
                message = empty_input_message(f"input '{name}'", shape, optional.get(name, False))
                return f"{config['name']}: {message}" if config.get("name") else message
        return None

    def execute_answering_errors(self: Any, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        kept = []
        for i, request in enumerate(requests):
            refusal = empty_input(self, request)
            if refusal is None:
                kept.append(i)
            else:
                responses[i] = pb_utils.InferenceResponse(error=error(refusal, True))
                count(self, True, 1)
        if kept:
            text = None
            try:
                answers = execute(self, [requests[i] for i in kept])
            except pb_utils.TritonModelException as exc:
                text = str(exc)
            if text is not None:
                # the exception's traceback and PyTriton's frames form reference cycles that hold the requests,
                # and with them their inputs' shared memory, until Python's cyclic garbage collector runs: in the
                # stub that can be never (the leak of issue 26); collected now, outside the except block
                gc.collect()
                refusal = refusal_line(text)
                failed = error(text, False) if refusal is None else error(refusal, True)
                answers = [pb_utils.InferenceResponse(error=failed) for _ in kept]
                count(self, refusal is not None, len(kept))
            if answers is None:  # a decoupled model answers through its response senders
                return None
            for i, answer in zip(kept, answers, strict=True):
                responses[i] = answer
        return responses

    execute_answering_errors.answers_errors = True  # type: ignore[attr-defined]
    model_class.execute = execute_answering_errors


def stub_source(original: bytes) -> bytes:
    """PyTriton's stub source with this module run after it, its ``execute`` wrapped by :func:`answer_errors`."""
    own = Path(__file__).read_text(encoding="utf-8")
    tail = ("\n\n# gmiseg-edge (gmiseg_edge/serve/stub_errors.py): errors become error responses\n"
            "_gmiseg_edge_stub_errors = {'__name__': 'gmiseg_edge_stub_errors'}\n"
            f"exec(compile({own!r}, 'gmiseg_edge/serve/stub_errors.py', 'exec'), _gmiseg_edge_stub_errors)\n"
            "_gmiseg_edge_stub_errors['answer_errors'](TritonPythonModel, pb_utils)\n")
    return original + tail.encode("utf-8")
