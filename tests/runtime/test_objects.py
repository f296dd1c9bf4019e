"""Several objects per decoder call (``predict(image, boxes=...)``, ``predict_objects``) on the exported
lite_medsam graphs in ONNX Runtime: the same masks as one call per object, in as few decoder runs as promised."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prompts import boxes_from_labels
from gmiseg_edge.data import load_sample_cases, load_sample_pair
from gmiseg_edge.metrics import dice
from tests.no_torch import run_without_torch

LOGITS_ATOL = 1e-3  # float32 summation order between a K-object run and K single runs; observed ~2e-5


@pytest.fixture(scope="module")
def nuclei():
    """The nuclei image and a box around each of its instances (ascending instance id)."""
    case = load_sample_cases(["dsb_nuclei"])[0]
    _, boxes = boxes_from_labels(load_sample_pair("dsb_nuclei")[1].array)
    return case.image, boxes


@pytest.fixture
def decoder_runs(predictor, monkeypatch):
    """The K of every decoder run the predictor makes (the real backend runs; its calls are recorded)."""
    runs: list[int] = []
    real = predictor.backend.decode

    def recording(inputs):
        runs.append(inputs.objects)
        return real(inputs)

    monkeypatch.setattr(predictor.backend, "decode", recording)
    return runs


def test_sixteen_boxes_in_two_decoder_runs_equal_sixteen_single_runs(predictor, nuclei, decoder_runs):
    image, boxes = nuclei
    chosen = boxes[:: len(boxes) // 16][:16]
    objects = predictor.predict(image, boxes=chosen)
    assert decoder_runs == [8, 8] and len(objects) == 16  # DEFAULT_MAX_OBJECTS a run (memory, issue 26)
    singles = [predictor.predict(image, box=box) for box in chosen]
    assert decoder_runs == [8, 8] + [1] * 16
    for k, single in enumerate(singles):
        assert objects[k].outputs == single.outputs == (0,)
        np.testing.assert_allclose(objects[k].low_res_logits, single.low_res_logits, atol=LOGITS_ATOL)
        assert dice(objects[k].mask, single.mask) >= 0.999, k
        assert abs(objects[k].score - single.score) <= 1e-4
    labels = objects.label_map()
    assert labels.shape == image.shape[:2] and labels.max() == 16


def test_mixed_prompts_are_grouped_by_point_count_and_chunked(predictor, nuclei, decoder_runs, monkeypatch):
    image, boxes = nuclei
    first = predictor.predict(image, box=boxes[0])
    centre = lambda box: [[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]  # noqa: E731
    objects = [  # (box, points, labels, mask_input): decoder point counts 2, 2, 3, 2, 2 (one point + padding)
        (boxes[1], None, None, None),
        (boxes[2], None, None, first.mask_input),
        (boxes[3], centre(boxes[3]), [1], None),
        (boxes[4], None, None, None),
        (None, centre(boxes[5]), [1], None),
    ]
    monkeypatch.setattr(predictor.backend, "max_objects", 2)
    decoder_runs.clear()
    got = predictor.predict_objects(image, boxes=[o[0] for o in objects], points=[o[1] for o in objects],
                                    labels=[o[2] for o in objects], mask_inputs=[o[3] for o in objects])
    # N=2 (boxes, and the lone point + its padding point): 4 objects in runs of 2; N=3 (box + point): 1
    assert sorted(decoder_runs) == [1, 2, 2]
    for k, (box, points, labels, mask_input) in enumerate(objects):
        single = predictor.predict(image, box=box, points=points, labels=labels, mask_input=mask_input)
        assert got[k].outputs == single.outputs  # the lone point is ambiguous: multimask, as alone
        np.testing.assert_allclose(got[k].low_res_logits, single.low_res_logits, atol=LOGITS_ATOL)
        assert dice(got[k].mask, single.mask) >= 0.999, k


def test_bad_objects_are_named(predictor, nuclei):
    image, boxes = nuclei
    with pytest.raises(InputError, match=r"object 1: box .* x1=.* outside the image"):
        predictor.predict(image, boxes=[boxes[0], [0, 0, 10_000, 5]])
    with pytest.raises(InputError, match=r"boxes= .* goes alone"):
        predictor.predict(image, boxes=boxes[:2], box=boxes[0])
    with pytest.raises(InputError, match=r"points has 1 entries but there are 2 objects"):
        predictor.predict_objects(image, boxes=boxes[:2], points=[[[5, 5]]], labels=[[1]])
    with pytest.raises(InputError, match="no objects"):
        predictor.predict(image, boxes=[])
    with pytest.raises(InputError, match="object 0: 1 point"):
        predictor.predict_objects(image, points=[[[5, 5]]])


def test_objects_label_maps_and_colour_overlays_need_no_torch(model_dir, tmp_path):
    proc = run_without_torch(f"""
        import sys
        import numpy as np
        from gmiseg_edge.core.prompts import boxes_from_labels
        from gmiseg_edge.data import load_sample_cases, load_sample_pair
        from gmiseg_edge.jobs.demo import segment_instances
        from gmiseg_edge.jobs.overlays import write_label_overlay
        from gmiseg_edge.runtime import load

        predictor = load({str(model_dir)!r}, backend="ort", threads=2)
        image = load_sample_cases(["dsb_nuclei"])[0].image
        instances = load_sample_pair("dsb_nuclei")[1].array
        few = np.where(np.isin(instances, np.unique(instances)[1:4]), instances, 0)
        labels = segment_instances(predictor, image, few)
        write_label_overlay({str(tmp_path / "o.png")!r}, image, labels)
        print(sorted(np.unique(labels).tolist()), [m for m in sys.modules if m.split(".")[0] == "torch"])
    """)
    assert proc.stdout.strip().splitlines()[-1] == "[0, 1, 2, 3] []"
    assert (tmp_path / "o.png").is_file()


def test_a_decoder_exported_before_the_prompt_dimension_decodes_one_object_per_run(predictor, model_dir, nuclei,
                                                                                    tmp_path):
    """Model folders exported before K existed have point_coords (1, N, 2): the backend reads K = 1 from the
    graph and the predictor runs one object at a time (the same masks), instead of failing inside ONNX Runtime."""
    import onnx

    from gmiseg_edge.runtime.backends.onnxrt.runner import OnnxRuntimeBackend
    from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session
    from gmiseg_edge.runtime.cache import EmbeddingCache
    from gmiseg_edge.runtime.predictor import Predictor

    graph = onnx.load(str(model_dir / "decoder.onnx"))
    for value in list(graph.graph.input) + list(graph.graph.output):
        if value.name != "image_embeddings":
            value.type.tensor_type.shape.dim[0].dim_value = 1  # K fixed to 1, as the single-prompt export had it
    onnx.save(graph, str(tmp_path / "decoder.onnx"))
    backend = OnnxRuntimeBackend(cpu_session(model_dir / "encoder.onnx", 2), cpu_session(tmp_path / "decoder.onnx", 2),
                                 "old-folder", "fp32")
    assert backend.max_objects == 1 and predictor.backend.max_objects == 8
    old = Predictor(backend, predictor.preprocess_config, EmbeddingCache())
    image, boxes = nuclei
    encoded = predictor.encode(image)  # cached: the same embedding for both, no encoder run here
    got, want = old.predict(encoded, boxes=boxes[:3]), predictor.predict(encoded, boxes=boxes[:3])
    assert all(dice(g.mask, w.mask) >= 0.999 for g, w in zip(got, want, strict=True))


def test_objects_beyond_the_object_pixel_budget_are_refused_before_decoding():
    """Issue 26: 1000 boxes on a 512^2 image took 6.2 GB; they now fit (bounded post-processing,
    benchmarks/objects_memory.py) and the budget refuses beyond 2^28 object-pixels, saying how many fit."""
    from gmiseg_edge.runtime.predictor import MAX_OBJECT_PIXELS, object_prompts

    box = [10.0, 10.0, 100.0, 100.0]
    assert len(object_prompts((512, 512), boxes=[box] * 1000)) == 1000  # inside the budget: taken
    with pytest.raises(InputError, match=rf"1025 objects on a 512x512 image is above the budget of "
                                         rf"{MAX_OBJECT_PIXELS} object-pixels .*: segment at most 1024 objects"):
        object_prompts((512, 512), boxes=[box] * 1025)
    with pytest.raises(InputError, match=r"257 objects on a 1024x1024 image .* at most 256 objects"):
        object_prompts((1024, 1024), boxes=[box] * 257)
