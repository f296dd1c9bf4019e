"""The served models' logic without Triton (ServingModels on the real ONNX Runtime predictor), and the BLS
pipeline of the exported repository with ONNX Runtime sessions standing in for Triton's encoder and decoder."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.graph_io import DECODER_OUTPUTS, DecoderInputs
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.runtime import EmbeddingCache, load
from gmiseg_edge.serve.handlers import ServingModels
from gmiseg_edge.serve.pipeline import segment_pipeline
from gmiseg_edge.serve.protocol import EmbeddingKey, UnknownKeyError

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def case():
    sample = next(c for c in load_sample_cases() if c.name == "totalseg_abdomen/liver")
    return sample.image, box_from_mask(sample.mask)


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    predictor = load(model_dir, backend="ort", threads=2, cache=EmbeddingCache(folder=tmp_path_factory.mktemp("c")))
    return ServingModels(predictor)


def test_encode_decode_segment_equal_predict(served, case):
    image, box = case
    expected = served.predictor.predict(image, box=box)
    keys = served.encode([image[:, :, None], np.repeat(image[:, :, None], 3, axis=2)])  # one encoder batch
    parsed = EmbeddingKey.parse(keys[0])
    assert (parsed.height, parsed.width) == image.shape and keys[0] != keys[1]
    out = served.decode({"key": np.asarray([keys[0].encode()], dtype=object), "box": box})
    assert np.array_equal(out["mask"].astype(bool), expected.mask)
    assert out["score"][0] == pytest.approx(expected.score, abs=1e-6)
    segmented = served.segment({"image": image[:, :, None], "box": box})
    assert np.array_equal(segmented["mask"], out["mask"])
    assert segmented["key"][0].decode() == keys[0]


def test_a_disk_cached_key_survives_a_new_server(served, case, model_dir):
    image, box = case
    key = served.encode([image[:, :, None]])[0]
    fresh = ServingModels(load(model_dir, backend="ort", threads=2,
                               cache=EmbeddingCache(folder=served.predictor.cache.folder)))
    out = fresh.decode({"key": np.asarray([key.encode()], dtype=object), "box": box})
    assert fresh.predictor.stats.disk_hits == 1 and fresh.predictor.stats.encoder_runs == 0
    assert np.array_equal(out["mask"], served.decode({"key": np.asarray([key.encode()], dtype=object),
                                                      "box": box})["mask"])


@pytest.mark.parametrize("inputs, words", [
    ({"image": np.zeros((8, 8), np.uint8)}, ("'image'", "[H, W, C]")),
    ({"image": np.zeros((8, 8, 2), np.uint8)}, ("'image'", "1 or 3 channels")),
    ({"image": np.zeros((8, 8, 1), np.float32)}, ("'image'", "uint8")),
])
def test_bad_images_name_the_input(served, inputs, words):
    with pytest.raises(InputError) as error:
        served.segment({**inputs, "box": np.asarray([0, 0, 4, 4], np.float32)})
    assert all(word in str(error.value) for word in words), str(error.value)


def test_bad_keys_and_prompts_name_the_input(served, case):
    image, _ = case
    key = np.asarray([served.encode([image[:, :, None]])[0].encode()], dtype=object)
    with pytest.raises(InputError, match=r"'key'.*not an embedding key"):
        served.decode({"key": np.asarray([b"abc"], dtype=object), "box": np.zeros(4, np.float32)})
    with pytest.raises(UnknownKeyError, match=r"'key'.*not in the server's cache"):
        served.decode({"key": np.asarray([("f" * 64 + "-5x5").encode()], dtype=object),
                       "box": np.zeros(4, np.float32)})
    with pytest.raises(InputError, match=r"'points'.*outside the image"):
        served.decode({"key": key, "points": np.asarray([[500, 3]], np.float32), "labels": np.ones(1, np.float32)})
    with pytest.raises(InputError, match=r"'box'.*FP32"):
        served.decode({"key": key, "box": np.zeros(4, np.float64)})
    with pytest.raises(InputError, match="empty prompt"):
        served.decode({"key": key})


def test_bls_pipeline_equals_predict(model_dir, served, case):
    image, box = case
    manifest = Manifest.load(model_dir)
    backend = served.predictor.backend  # ONNX Runtime sessions on the folder's graphs, as Triton would run them

    def decode(feed):
        return dict(zip(DECODER_OUTPUTS, backend.decode(DecoderInputs(**feed)), strict=True))

    point = np.asarray([[60, 50]], np.float32)
    for prompt in ({"box": box}, {"points": point, "labels": np.ones(1, np.float32)}):
        out = segment_pipeline({"image": image[:, :, None], **prompt}, manifest.preprocess,
                               backend.encode, decode)
        expected = served.predictor.predict(image, **prompt)
        assert np.array_equal(out["mask"].astype(bool), expected.mask)
        assert np.allclose(out["low_res_logits"], expected.low_res_logits[expected.index], atol=1e-5)


@pytest.fixture(scope="module")
def liver_sets(served, tmp_path_factory):
    """The support set 'liver' (one example: the liver slice), loaded as ``serve --support`` loads it."""
    from PIL import Image

    from gmiseg_edge.serve.app import load_support_sets

    liver = next(c for c in load_sample_cases() if c.name == "totalseg_abdomen/liver")
    root = tmp_path_factory.mktemp("sets")
    for folder in ("images", "masks"):
        (root / "liver" / folder).mkdir(parents=True)
    Image.fromarray(liver.image).save(root / "liver" / "images" / "a.png")
    Image.fromarray(liver.mask.astype(np.uint8)).save(root / "liver" / "masks" / "a.png")
    return load_support_sets(served.predictor, [("liver", root / "liver")], log=lambda _: None)


def test_segment_support_uses_the_named_support_set(served, liver_sets):
    liver = next(c for c in load_sample_cases() if c.name == "totalseg_abdomen/liver")
    support_sets = liver_sets
    models = ServingModels(served.predictor, support_sets=support_sets)
    out = models.segment_support({"image": liver.image[:, :, None], "support": np.asarray([b"liver"], dtype=object)})
    expected = support_sets["liver"].pixels.segment(liver.image)
    assert np.array_equal(out["mask"].astype(bool), expected.mask) and out["uncertainty"].shape == liver.image.shape
    with pytest.raises(InputError, match=r"'support': unknown support set 'spleen'; this server has liver"):
        models.segment_support({"image": liver.image[:, :, None], "support": np.asarray([b"spleen"], dtype=object)})


def test_a_request_with_a_pixel_size_is_segmented_in_mm(served, tmp_path):
    """Input 'spacing' (issue 24, millimetres everywhere): the examples at their headers' pixel sizes, the query at
    the stated one, as the runtime does given both; without it, everything at 1 mm per pixel. The example is the
    liver slice at 1.5 mm per pixel (a NIfTI header), the query the same slice at half the size (3 mm per pixel):
    the two rules answer differently here, so a server that dropped the input would fail."""
    import cv2
    import nibabel as nib

    from gmiseg_edge.metrics import dice
    from gmiseg_edge.serve.app import load_support_sets

    liver = next(c for c in load_sample_cases() if c.name == "totalseg_abdomen/liver")
    for folder, array in (("images", liver.image), ("masks", liver.mask.astype(np.uint8))):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), np.diag([1.5, 1.5, 1.0, 1.0])),
                 str(tmp_path / folder / "a.nii.gz"))
    sets = load_support_sets(served.predictor, [("liver", tmp_path)], log=lambda _: None)
    assert [s.spacing for s in sets["liver"].physical.supports] == [(1.5, 1.5)]
    assert [s.spacing for s in sets["liver"].pixels.supports] == [(1.0, 1.0)]
    height, width = liver.image.shape
    query = cv2.resize(liver.image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    truth = cv2.resize(liver.mask.astype(np.uint8), (width // 2, height // 2), interpolation=cv2.INTER_NEAREST) > 0
    models = ServingModels(served.predictor, support_sets=sets)
    request = {"image": query[:, :, None], "support": np.asarray([b"liver"], dtype=object)}
    in_mm = models.segment_support({**request, "spacing": np.asarray([3.0, 3.0], np.float32)})["mask"] > 0
    in_pixels = models.segment_support(request)["mask"] > 0
    assert np.array_equal(in_mm, sets["liver"].physical.segment(query, spacing=(3.0, 3.0)).mask)
    assert np.array_equal(in_pixels, sets["liver"].pixels.segment(query).mask)
    assert not np.array_equal(in_mm, in_pixels)
    print(f"liver at half size: Dice in mm {dice(in_mm, truth):.3f}, in pixels {dice(in_pixels, truth):.3f}")
    assert dice(in_mm, truth) > 0.8
    for bad in ([3.0], [0.0, 3.0], [np.nan, 3.0], [3.0, 1e4]):
        with pytest.raises(InputError, match=r"input 'spacing': the image's pixel size takes two numbers of mm"):
            models.segment_support({**request, "spacing": np.asarray(bad, np.float32)})


def test_a_support_query_beyond_the_support_pixel_limit_is_refused_before_any_work(served, liver_sets, case):
    """Issue 26: each support keeps maps of the query's size until they are combined (~60-70 bytes a query pixel),
    so a large query on a support set could exhaust memory; supports x query pixels are bounded."""
    from gmiseg_edge.serve.protocol import ServeLimits

    image, _ = case
    height, width = image.shape
    models = ServingModels(served.predictor, limits=ServeLimits(max_support_pixels=height * width - 1),
                           support_sets=liver_sets)
    request = {"image": image[:, :, None], "support": np.asarray([b"liver"], dtype=object)}
    unseen = {**request, "image": np.ascontiguousarray(image[::-1, :, None])}  # not in the cache: encoding would show
    before = served.predictor.stats
    with pytest.raises(InputError, match=rf"'image': {height}x{width} with support set 'liver' \(1 support\(s\)\) is "
                                         rf"{height * width} support-pixels; this server takes at most "
                                         rf"{height * width - 1} .*--max-support-pixels"):
        models.segment_support(unseen)
    assert served.predictor.stats.encoder_runs == before.encoder_runs
    exact = ServingModels(served.predictor, limits=ServeLimits(max_support_pixels=height * width),
                          support_sets=liver_sets)
    assert exact.segment_support(request)["mask"].shape == image.shape  # the limit itself is taken


def test_a_key_is_looked_up_never_parsed_for_a_size(served, case):
    """Issue 26: a key ending -20000x20000 on a small image made a 400 MB mask; the stored size is used."""
    image, box = case
    key = EmbeddingKey.parse(served.encode([image[:, :, None]])[0])
    forged = f"{key.cache_key}-20000x20000".encode()
    height, width = image.shape
    with pytest.raises(InputError, match=rf"'key': the key states 20000x20000 but .* from a {height}x{width} image"):
        served.decode({"key": np.asarray([forged], dtype=object), "box": box})
    fresh = ServingModels(served.predictor)  # same caches: the size comes from the stored entry, never the key
    out = fresh.decode({"key": np.asarray([str(key).encode()], dtype=object), "box": box})
    assert out["mask"].shape == image.shape


@pytest.mark.parametrize("inputs, words", [
    ({"points": np.zeros((20000, 2), np.float32), "labels": np.ones(20000, np.float32)},
     r"'points': 20000 points; this server takes at most 64"),
    ({"points": np.zeros((0, 2), np.float32), "labels": np.zeros(0, np.float32)},
     r"'points': empty, shape \[0, 2\]; leave it out instead"),
    ({"box": np.zeros((1000, 4), np.float32)}, r"'box': expected shape \[4\], got \[1000, 4\]"),
    ({"image": np.zeros((0, 0, 1), np.uint8)}, r"'image': empty, shape \[0, 0, 1\]"),
    ({"image": np.zeros((5000, 5000, 1), np.uint8)}, r"'image': 5000x5000 is larger than this server takes"),
])
def test_requests_beyond_the_limits_are_refused_before_any_work(served, case, inputs, words):
    image, box = case
    before = served.predictor.stats
    with pytest.raises(InputError, match=words):
        served.segment({"image": image[:, :, None], "box": box, **inputs})
    assert served.predictor.stats.encoder_runs == before.encoder_runs


def test_limits_are_configurable(served, case, tmp_path):
    from typer.testing import CliRunner

    from gmiseg_edge.cli import app
    from gmiseg_edge.serve.protocol import ServeLimits

    image, box = case
    height, width = image.shape
    small = ServingModels(served.predictor, limits=ServeLimits(max_points=2, max_pixels=100 * 100))
    with pytest.raises(InputError, match=rf"{height}x{width} is larger than this server takes \(10000 pixels"):
        small.segment({"image": image[:, :, None], "box": box})
    points = {"points": np.full((3, 2), 5, np.float32), "labels": np.ones(3, np.float32)}
    with pytest.raises(InputError, match=r"'points': 3 points; this server takes at most 2"):
        small.decode({"key": np.asarray([served.encode([image[:, :, None]])[0].encode()], dtype=object), **points})
    # serve's flags: refused before any server starts (no PyTriton needed), listed in its help
    refused = CliRunner().invoke(app, ["serve", "--model-dir", str(tmp_path), "--max-points", "0"])
    assert refused.exit_code == 1 and "limits must be >= 1" in refused.output, refused.output
    help_text = CliRunner().invoke(app, ["serve", "--help"]).output
    assert all(flag in help_text for flag in ("--max-points", "--max-pixels", "--max-side", "--max-support-pixels"))


def test_a_refusal_reaches_the_client_as_one_line(served):
    """Issue 26: PyTriton sent a client the server's whole stack around the model's message."""
    import traceback

    from gmiseg_edge.serve.app import ServeRequestError, _single_callable

    infer = _single_callable("decode", served.decode)  # the callable `serve` binds
    with pytest.raises(ServeRequestError) as refused:
        infer([{"key": np.asarray([b"abc"], dtype=object), "box": np.zeros(4, np.float32)}])
    error = refused.value
    sent = "".join(traceback.format_exception(None, error, error.__traceback__))  # PyTriton 0.7's inference handler
    assert sent == ("gmiseg_edge.serve.app.ServeRequestError: decode: input 'key': 'abc' is not an embedding key "
                    "(expected '<64 hex>-<H>x<W>' as returned by the 'encode' or 'segment' model)\n"), sent
    assert refused.tb is not None and "handlers.py" in "".join(traceback.format_tb(refused.tb))  # the log keeps it


def test_stub_errors_find_the_refusal_and_word_empty_inputs():
    """The text PyTriton's stub raises around a refusal (its traceback, the handler's line inside) gives the line
    alone; anything else gives None (an internal error, answered as such)."""
    from gmiseg_edge.serve.stub_errors import empty_input_message, refusal_line

    wrapped = ("Model execute error: Traceback (most recent call last):\n  File \"/tmp/x/1/model.py\", line 484, in "
               "execute\n    raise triton_responses_or_error\nc_python_backend_utils.TritonModelException: "
               "gmiseg_edge.serve.app.ServeRequestError: decode: input 'key': 'abc' is not an embedding key\n\n")
    assert refusal_line(wrapped) == "decode: input 'key': 'abc' is not an embedding key"
    assert refusal_line("Model execute error: Traceback ...\nTypeError: boom\n") is None
    assert empty_input_message("input 'box'", (0,), optional=True) == ("input 'box': empty, shape [0]; leave it out "
                                                                       "instead")
