"""The ONNX Runtime predictor against the PyTorch reference, the output choice rule, caching and threads.

Real exported graphs (the session's ``exported_models`` folder), real sample scans, ONNX Runtime on the CPU.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import EmbeddingCache, load


@pytest.fixture(scope="module")
def cases():
    return load_sample_cases()


def random_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct foreground pixels as (x, y)."""
    rows, cols = np.nonzero(mask)
    chosen = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
    return np.stack([cols[chosen], rows[chosen]], axis=1).astype(np.float32)


@pytest.fixture
def torch_one_thread():
    """PyTorch on one thread: on this loaded 2-core CPU it is ~3x faster than on two (no oversubscription)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


GEOMETRIES = ("brain1/lesion", "breast1/lesion", "lung2/lesion", "totalseg_abdomen/liver", "dsb_nuclei/nuclei")


def test_onnx_runtime_matches_the_pytorch_reference_on_each_image_geometry(predictor, cases, torch_one_thread):
    """The runtime end to end (its own pre/post-processing, box and point prompts) against segment-anything's, on
    one sample case of each image size and modality (export validation already holds the graphs to PyTorch on
    every case, with box prompts)."""
    from gmiseg_edge.models.build import build_model
    from gmiseg_edge.models.reference import TorchReference
    from gmiseg_edge.models.zoo import get_spec

    reference = TorchReference(build_model("lite_medsam"), get_spec("lite_medsam").preprocess)
    rng = np.random.default_rng(0)
    worst = {}
    chosen = [case for case in cases if case.name in GEOMETRIES]
    assert len(chosen) == len(GEOMETRIES) and len({case.image.shape for case in chosen}) >= 4
    for case in chosen:
        prepared, embedding = reference.prepare(case.image)
        box = box_from_mask(case.mask)
        three, one = random_points(case.mask, 3, rng), random_points(case.mask, 1, rng)
        ones = np.ones(3, np.int64)
        runs = {
            # box: unambiguous -> single-mask output, as the reference without multimask
            "box": (predictor.predict(case.image, box=box).mask,
                    reference.predict(prepared, embedding, box=box).mask),
            # several points: single-mask output
            "3 points": (predictor.predict(case.image, points=three, labels=ones).mask,
                         reference.predict(prepared, embedding, points=three, labels=ones).mask),
            # one point: multimask, best predicted IoU
            "1 point": (predictor.predict(case.image, points=one, labels=[1]).mask,
                        reference.predict(prepared, embedding, points=one, labels=[1], multimask=True).mask),
        }
        for kind, (ours, theirs) in runs.items():
            worst[(case.name, kind)] = dice(ours, theirs)
    print("\nmin Dice ONNX Runtime vs PyTorch:", min(worst.values()))
    bad = {k: v for k, v in worst.items() if v < 0.999}
    assert not bad, bad


def test_output_choice_follows_sam(predictor, cases):
    case = cases[0]
    point = random_points(case.mask, 1, np.random.default_rng(1))
    single_point = predictor.predict(case.image, points=point, labels=[1])
    assert single_point.outputs == (1, 2, 3) and single_point.index == int(np.argmax(single_point.iou))
    assert single_point.masks.shape == (3, *case.image.shape[:2]) and single_point.low_res_logits.shape == (3, 256, 256)
    boxed = predictor.predict(case.image, box=box_from_mask(case.mask))
    assert boxed.outputs == (0,) and boxed.index == 0 and boxed.mask.shape == case.image.shape[:2]
    assert np.array_equal(boxed.mask, boxed.logits[0] > 0)
    assert predictor.predict(case.image, points=point, labels=[1], multimask=False).outputs == (0,)
    assert predictor.predict(case.image, box=box_from_mask(case.mask), multimask=True).outputs == (1, 2, 3)
    refined = predictor.predict(case.image, points=point, labels=[1], mask_input=single_point.mask_input)
    assert refined.outputs == (0,)  # a previous mask makes the prompt unambiguous


def test_a_repeated_prompt_on_a_cached_image_does_not_run_the_encoder(model_dir, cases):
    predictor = load(model_dir, backend="ort", cache=EmbeddingCache())
    case = cases[1]
    box = box_from_mask(case.mask)
    first = predictor.predict(case.image, box=box)
    assert predictor.stats.encoder_runs == 1 and predictor.stats.misses == 1
    for _ in range(3):
        again = predictor.predict(case.image, box=box)
        assert np.array_equal(again.mask, first.mask)
    point = predictor.predict(case.image.copy(), points=random_points(case.mask, 2, np.random.default_rng(2)),
                              labels=[1, 1])
    assert point.mask.any()
    stats = predictor.stats
    assert stats.encoder_runs == 1 and stats.memory_hits == 4, stats


def test_a_cache_hit_skips_preprocessing_and_keys_follow_the_preprocessing(model_dir, cases, monkeypatch):
    from dataclasses import replace

    from gmiseg_edge.runtime import predictor as predictor_module
    from gmiseg_edge.runtime.cache import image_key
    from gmiseg_edge.runtime.predictor import preprocessing_id

    calls = []
    real = predictor_module.preprocess
    monkeypatch.setattr(predictor_module, "preprocess", lambda *a, **k: calls.append(1) or real(*a, **k))
    predictor = load(model_dir, backend="ort", cache=EmbeddingCache())
    case = cases[2]
    box = box_from_mask(case.mask)
    cold = predictor.predict(case.image, box=box)
    warm = predictor.predict(case.image, box=box)
    assert len(calls) == 1 and predictor.stats.memory_hits == 1  # the hit did not preprocess
    assert np.array_equal(cold.mask, warm.mask) and cold.mask.shape == case.image.shape[:2]
    config = predictor.preprocess_config
    other = replace(config, normalization="sam" if config.normalization == "minmax" else "minmax")
    pixels = np.ascontiguousarray(case.image)
    key = image_key(pixels, preprocessing_id(config), "e")
    assert key == image_key(pixels.copy(), preprocessing_id(config), "e")
    assert key != image_key(pixels, preprocessing_id(other), "e")
    assert key != image_key(pixels, preprocessing_id(config), "f")
    assert key != image_key(pixels[::-1].copy(), preprocessing_id(config), "e")


def test_eight_threads_sharing_one_model_give_the_masks_of_one_thread(model_dir, cases):
    predictor = load(model_dir, backend="ort", cache=EmbeddingCache())
    rng = np.random.default_rng(3)
    jobs = []
    for case in cases[:3]:
        jobs.append((case.image, {"box": box_from_mask(case.mask)}))
        for n in (1, 2, 4):
            jobs.append((case.image, {"points": random_points(case.mask, n, rng), "labels": np.ones(n)}))
    jobs = jobs * 2

    def run(job):
        image, prompt = job
        return predictor.predict(image, **prompt).mask

    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(run, jobs))
    assert predictor.stats.encoder_runs == 3  # each image encoded once, even when asked for at the same time
    serial = [run(job) for job in jobs]
    assert all(np.array_equal(a, b) for a, b in zip(parallel, serial, strict=True))


def test_auto_picks_onnx_runtime_here_and_says_why(model_dir):
    predictor = load(model_dir)  # no engines in a fresh export, no TensorRT on this machine
    assert predictor.backend.name == "ort"
    assert "TensorRT" in predictor.backend_note and "gmiseg-edge build" in predictor.backend_note
    assert predictor.backend.providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                              "CPUExecutionProvider")


def test_fp16_graphs_load_and_agree_with_fp32(model_dir, predictor, cases):
    fp16 = load(model_dir, backend="ort", precision="fp16")
    case = cases[4]
    box = box_from_mask(case.mask)
    assert dice(fp16.predict(case.image, box=box).mask, predictor.predict(case.image, box=box).mask) > 0.98
    assert fp16.backend.encoder_id != predictor.backend.encoder_id  # separate cache entries per precision


def test_torch_backend_is_the_reference_behind_the_same_predictor(model_dir, predictor, cases, torch_one_thread):
    reference = load(model_dir, backend="torch")
    assert reference.backend.name == "torch" and reference.backend.encoder_id != predictor.backend.encoder_id
    case = cases[3]
    box = box_from_mask(case.mask)
    assert dice(reference.predict(case.image, box=box).mask, predictor.predict(case.image, box=box).mask) >= 0.999


def test_encoder_threads_sleep_when_idle_and_decoder_threads_spin(predictor):
    """The encoder session must not busy-wait after a run: that stole the cores from the next decoder run."""
    spinning = "session.intra_op.allow_spinning"
    encoder, decoder = predictor.backend._encoder, predictor.backend._decoder
    assert encoder.get_session_options().get_session_config_entry(spinning) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: ONNX Runtime's default, spin
        decoder.get_session_options().get_session_config_entry(spinning)
    assert encoder.get_session_options().intra_op_num_threads == 2
