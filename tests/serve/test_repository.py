"""`gmiseg-edge export-triton`: the repository's layout, and every config.pbtxt parsed by Triton's own
model-config protobuf (tritonclient's model_config_pb2, in the serving environment)."""

from __future__ import annotations

import json

import pytest

from gmiseg_edge.core.errors import ManifestError
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.serve.pbtxt import Enum, to_pbtxt
from gmiseg_edge.serve.repository import RepositoryOptions, write_repository
from tests.conftest import killed_runs_staging
from tests.serve.conftest import run_script

pytestmark = pytest.mark.weights


def test_pbtxt_writer_formats_messages_lists_enums_and_strings():
    text = to_pbtxt({"name": 'a"b', "max_batch_size": 0, "input": [{"dims": [-1, 2], "data_type": Enum("TYPE_FP32"),
                                                                     "optional": True}], "skip": None})
    assert text == 'name: "a\\"b"\nmax_batch_size: 0\ninput {\n  dims: -1\n  dims: 2\n  data_type: TYPE_FP32\n' \
                   '  optional: true\n}\n'


@pytest.fixture(scope="module")
def repository(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "repo"
    written = write_repository(RepositoryOptions(model_dir=model_dir, out=out, max_batch=8))
    return out, written


def test_repository_layout(repository):
    out, written = repository
    assert sorted(written) == ["decoder_fp16", "decoder_fp32", "encoder_fp16", "encoder_fp32", "segment_fp16",
                               "segment_fp32"]
    for name in written:
        version = out / name / "1"
        expected = "model.py" if name.startswith("segment") else "model.onnx"
        assert (version / expected).is_file(), name
    assert "class TritonPythonModel" in (out / "segment_fp32" / "1" / "model.py").read_text()
    assert not list(out.parent.glob(".repo.partial-*"))


def test_configs_parse_with_tritons_model_config_protobuf(repository, serve_env, model_dir):
    out, _ = repository
    configs = run_script(serve_env, "parse_configs.py", str(out))
    size = Manifest.load(model_dir).preprocess.input_size
    encoder = configs["encoder_fp16"]
    assert encoder["platform"] == "onnxruntime_onnx" and encoder["max_batch_size"] == 8
    assert encoder["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": ["3", str(size), str(size)]}]
    assert encoder["output"][0]["dims"] == ["256", "64", "64"]
    assert encoder["dynamic_batching"] == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": "2000"}
    assert encoder["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    decoder = configs["decoder_fp32"]
    assert decoder.get("max_batch_size", 0) == 0 and decoder["instance_group"][0]["count"] == 2
    dims = {t["name"]: t["dims"] for t in decoder["input"]}
    assert dims["image_embeddings"] == ["1", "256", "64", "64"] and dims["point_coords"][-1] == "2"
    assert [t["name"] for t in decoder["output"]] == ["low_res_masks", "iou_predictions"]
    segment = configs["segment_fp16"]
    assert segment["backend"] == "python" and segment["instance_group"][0]["kind"] == "KIND_CPU"
    optional = {t["name"]: t.get("optional", False) for t in segment["input"]}
    assert optional == {"image": False, "points": True, "labels": True, "box": True, "mask_input": True}
    parameters = {k: v["string_value"] for k, v in segment["parameters"].items()}
    assert parameters["encoder_model"] == "encoder_fp16" and parameters["decoder_model"] == "decoder_fp16"
    assert json.loads(parameters["preprocess"])["input_size"] == size


def test_refusals_leave_nothing(model_dir, tmp_path):
    out = tmp_path / "repo"
    with pytest.raises(ManifestError, match="gmiseg-edge build"):  # no engines built here (no GPU)
        write_repository(RepositoryOptions(model_dir=model_dir, out=out, format="tensorrt"))
    with pytest.raises(ManifestError, match="no int8 graphs"):
        write_repository(RepositoryOptions(model_dir=model_dir, out=out, precisions=("int8",)))
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    with pytest.raises(ManifestError, match="already exists"):
        write_repository(RepositoryOptions(model_dir=model_dir, out=out))


def test_export_triton_deletes_the_staging_folders_of_killed_runs(tmp_path):
    """Issue 26: only `export` cleaned the partial folders that its killed runs left."""
    from tests.core.test_manifest import _write_folder

    _write_folder(tmp_path / "m")  # graphs that are not ONNX: the repository fails after the sweep
    stale, fresh = killed_runs_staging(tmp_path, "repo")
    said: list[str] = []
    with pytest.raises(Exception, match=r"encoder\.onnx"):
        write_repository(RepositoryOptions(model_dir=tmp_path / "m", out=tmp_path / "repo"), log=said.append)
    assert not stale.exists() and fresh.is_dir()
    assert said == [f"removed {stale} (left by an export-triton that was killed)"]
    assert len(list(tmp_path.glob(".repo.partial-*"))) == 1  # the failed run removed its own
