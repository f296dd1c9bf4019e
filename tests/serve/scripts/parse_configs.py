"""Parse every ``<repo>/*/config.pbtxt`` with Triton's own model-config protobuf (tritonclient) and print them as
one JSON line {model: config as a dict}. Run in the serving environment (tritonclient[grpc], protobuf<7)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

if __name__ == "__main__":
    parsed = {}
    for path in sorted(Path(sys.argv[1]).glob("*/config.pbtxt")):
        message = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())  # unknown fields raise
        parsed[path.parent.name] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    print(json.dumps(parsed))
