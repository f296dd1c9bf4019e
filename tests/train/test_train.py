"""Training building blocks: prompt simulation, augmentation, losses, the low-res ground truth, samples from
dataset folders and their errors, sharding. Fast; no model weights needed."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gmiseg_edge.core.prompts import box_from_mask  # noqa: E402
from gmiseg_edge.core.transforms import PreparedImage, postprocess_logits, preprocess  # noqa: E402
from gmiseg_edge.data import DataError, load_sample_cases, sample_data_dir  # noqa: E402
from gmiseg_edge.models.zoo import get_spec  # noqa: E402
from gmiseg_edge.train import (  # noqa: E402
    AugmentConfig,
    PromptConfig,
    TrainConfig,
    augment,
    checkpoint_path,
    dice_loss,
    flip,
    focal_loss,
    gaussian_noise,
    load_samples,
    lowres_target,
    make_example,
    parse_window,
    random_flip,
    segmentation_loss,
    simulate_box,
    simulate_points,
    simulate_prompt,
    to_input_frame,
    train,
)
from gmiseg_edge.train.distributed import epoch_order, shard  # noqa: E402

SAMPLES = sample_data_dir()


def blob_mask(shape: tuple[int, int] = (90, 140)) -> np.ndarray:
    """An asymmetric mask (an L shape plus a separate square) away from the borders."""
    mask = np.zeros(shape, dtype=bool)
    mask[20:60, 30:45] = True
    mask[50:60, 30:90] = True
    mask[10:18, 110:125] = True
    return mask


# ----------------------------------------------------------------------------------------- prompts


def test_points_are_inside_the_mask_and_seeded():
    mask = blob_mask()
    for seed in range(20):
        points = simulate_points(mask, 3, np.random.default_rng(seed))
        assert points.shape == (3, 2) and points.dtype == np.float32
        cols, rows = points[:, 0].astype(int), points[:, 1].astype(int)
        assert mask[rows, cols].all()
        assert len({tuple(p) for p in points}) == 3  # distinct when the mask has enough pixels
    again = simulate_points(mask, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(again, simulate_points(mask, 3, np.random.default_rng(7)))
    one_pixel = np.zeros((5, 5), dtype=bool)
    one_pixel[2, 3] = True
    np.testing.assert_array_equal(simulate_points(one_pixel, 2, np.random.default_rng(0)), [[3, 2], [3, 2]])


def test_box_contains_the_extent_with_bounded_offsets():
    mask = blob_mask()
    x0, y0, x1, y1 = box_from_mask(mask)
    offsets = []
    for seed in range(50):
        box = simulate_box(mask, np.random.default_rng(seed), max_offset=6)
        assert box[0] <= x0 and box[1] <= y0 and box[2] >= x1 and box[3] >= y1
        d = np.array([x0 - box[0], y0 - box[1], box[2] - x1, box[3] - y1])
        assert (d >= 0).all() and (d <= 6).all()
        offsets.append(d)
    assert np.ptp(np.array(offsets), axis=0).min() > 0  # offsets vary
    first, second = (simulate_box(mask, np.random.default_rng(3), 6) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(simulate_box(mask, np.random.default_rng(3), 0), [x0, y0, x1, y1])
    edge = np.zeros((30, 40), dtype=bool)
    edge[0:5, 35:40] = True
    for seed in range(10):  # clipped to the image
        box = simulate_box(edge, np.random.default_rng(seed), 10)
        assert box[0] >= 25 and box[1] == 0 and box[2] == 39 and box[3] <= 14


def test_mixed_prompts_give_both_kinds_and_respect_point_counts():
    mask = blob_mask()
    config = PromptConfig(mode="mixed", min_points=2, max_points=4)
    kinds, counts = set(), set()
    for seed in range(40):
        prompt = simulate_prompt(mask, np.random.default_rng(seed), config)
        kinds.add(prompt.kind)
        if prompt.points is not None:
            counts.add(len(prompt.points))
            assert (prompt.labels == 1).all()
    assert kinds == {"box", "points"} and counts == {2, 3, 4}
    with pytest.raises(ValueError, match="empty mask"):
        simulate_prompt(np.zeros((4, 4), bool), np.random.default_rng(0), config)
    with pytest.raises(ValueError, match="prompt mode"):
        PromptConfig(mode="scribble")


def test_prompts_scale_to_the_input_frame():
    mask = blob_mask((128, 512))  # long side 512 -> 256: scale 1/2
    prompt = simulate_prompt(mask, np.random.default_rng(0), PromptConfig(mode="box"))
    scaled = to_input_frame(prompt, mask.shape, 256)
    np.testing.assert_allclose(scaled.box, prompt.box / 2)


# ----------------------------------------------------------------------------------------- augmentation


def test_flips_apply_to_image_and_mask_together():
    mask = blob_mask()
    image = np.where(mask, 200, 30).astype(np.uint8)
    rgb = np.dstack([image, image // 2, image // 3])
    seen = set()
    for seed in range(30):
        flipped, flipped_mask, flips = random_flip(rgb, mask, np.random.default_rng(seed))
        seen.add(flips)
        np.testing.assert_array_equal(flipped[:, :, 0] == 200, flipped_mask)
        expected = mask[:, ::-1] if flips[0] else mask
        expected = expected[::-1] if flips[1] else expected
        np.testing.assert_array_equal(flipped_mask, expected)
    assert seen == {(False, False), (True, False), (False, True), (True, True)}
    same, same_mask = flip(image, mask, False, False)
    np.testing.assert_array_equal(same, image)
    np.testing.assert_array_equal(same_mask, mask)
    with pytest.raises(ValueError, match="differ"):
        flip(image, mask[:10], True, False)


def test_gaussian_noise_keeps_the_dtype_and_range():
    rng = np.random.default_rng(0)
    image = np.full((200, 200), 128, dtype=np.uint8)
    noisy = gaussian_noise(image, rng, 10.0)
    assert noisy.dtype == np.uint8 and 9.0 < noisy.astype(float).std() < 11.0
    assert abs(noisy.astype(float).mean() - 128) < 0.5
    extremes = gaussian_noise(np.array([[0, 255]], dtype=np.uint8), np.random.default_rng(1), 50.0)
    assert extremes.min() >= 0 and extremes.max() <= 255
    floats = gaussian_noise(np.zeros((50, 50), np.float32), np.random.default_rng(2), 1.0)
    assert floats.dtype == np.float32 and 0.9 < floats.std() < 1.1
    np.testing.assert_array_equal(
        gaussian_noise(image, np.random.default_rng(5), 3.0), gaussian_noise(image, np.random.default_rng(5), 3.0)
    )


def test_prompts_are_simulated_from_the_flipped_mask():
    """A mask in one corner: after a flip, the examples' prompts and ground truth move with the image."""
    mask = np.zeros((256, 256), dtype=bool)
    mask[10:60, 20:50] = True
    image = np.where(mask, 255, 0).astype(np.uint8)
    config = get_spec("lite_medsam").preprocess
    corners = set()
    for seed in range(24):
        example = make_example(
            _sample(image, mask), config, np.random.default_rng(seed), AugmentConfig(noise=0.0), PromptConfig()
        )
        target = example.target[0] > 0.5
        np.testing.assert_array_equal(target, example.image[0] >= 0.5)  # image and ground truth flipped alike
        prompt = example.prompt
        points = prompt.points if prompt.points is not None else prompt.box.reshape(2, 2)
        if prompt.points is not None:
            assert target[points[:, 1].astype(int), points[:, 0].astype(int)].all()
        else:
            rows, cols = np.nonzero(target)
            assert points[0, 0] <= cols.min() and points[1, 0] >= cols.max()
            assert points[0, 1] <= rows.min() and points[1, 1] >= rows.max()
        corners.add((bool(points[:, 0].mean() > 128), bool(points[:, 1].mean() > 128)))
    assert len(corners) == 4


def _sample(image: np.ndarray, mask: np.ndarray):
    from gmiseg_edge.train import TrainSample

    return TrainSample("synthetic", image, mask, Path("synthetic.png"))


def test_augment_none_is_identity():
    mask = blob_mask()
    image = np.where(mask, 200, 30).astype(np.uint8)
    out, out_mask = augment(image, mask, np.random.default_rng(0), AugmentConfig.none())
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(out_mask, mask)


# ----------------------------------------------------------------------------------------- losses


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # per pixel: -alpha_t (1 - p_t)^2 log p_t, alpha_t = 0.25 on foreground, 0.75 on background
    p = [_sigmoid(0.0), _sigmoid(2.0), _sigmoid(-1.0), _sigmoid(3.0)]
    terms = [
        0.25 * (1 - p[0]) ** 2 * -math.log(p[0]),
        0.75 * p[1] ** 2 * -math.log(1 - p[1]),
        0.75 * p[2] ** 2 * -math.log(1 - p[2]),
        0.25 * (1 - p[3]) ** 2 * -math.log(p[3]),
    ]
    assert focal_loss(logits, target).item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    # logit 0 on the foreground: 0.25 * 0.25 * log 2
    assert focal_loss(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)).item() == pytest.approx(
        0.0625 * math.log(2), rel=1e-6
    )
    no_alpha = focal_loss(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), alpha=-1)
    assert no_alpha.item() == pytest.approx(0.25 * math.log(2), rel=1e-6)


def test_dice_loss_matches_hand_computation():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    p = [_sigmoid(0.0), _sigmoid(2.0), _sigmoid(-1.0), _sigmoid(3.0)]
    inter = p[0] + p[3]
    expected = 1 - (2 * inter + 1e-5) / (sum(p) + 2 + 1e-5)
    assert dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # per sample, then the batch mean: a perfect sample (0) and an all-wrong one (~1)
    batch_logits = torch.tensor([[[[50.0, -50.0]]], [[[50.0, -50.0]]]])
    batch_target = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])
    assert dice_loss(batch_logits, batch_target).item() == pytest.approx(0.5, abs=1e-5)
    total = segmentation_loss(logits, target)
    assert total.item() == pytest.approx(focal_loss(logits, target).item() + expected, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        segmentation_loss(logits, target[..., :1])


# ----------------------------------------------------------------------------------------- low-res ground truth


@pytest.mark.parametrize("model", ["lite_medsam", "mobile_sam"])
def test_lowres_target_follows_the_image_geometry(model: str):
    """The target is where the image itself lands in the padded input frame, on the 256 x 256 grid."""
    config = get_spec(model).preprocess
    mask = blob_mask((90, 140))
    image = np.where(mask, 255, 0).astype(np.uint8)
    prepared = preprocess(image, config)
    frame = prepared.tensor[0, 0].astype(np.float64)
    if config.normalization == "sam":  # back to [0, 1]
        frame = (frame * config.pixel_std[0] + config.pixel_mean[0]) / 255.0
        frame[prepared.resized_size[0] :, :] = 0
        frame[:, prepared.resized_size[1] :] = 0
    size = config.input_size
    if size != 256:
        frame = cv2.resize(frame.astype(np.float32), (256, 256), interpolation=cv2.INTER_AREA)
    image_grid = frame
    target = lowres_target(mask, config)
    assert target.shape == (256, 256) and target.dtype == bool
    certain = np.abs(image_grid - 0.5) > 0.02
    np.testing.assert_array_equal(target[certain], image_grid[certain] >= 0.5)
    rows, cols = (np.array(prepared.resized_size) * 256 / size).astype(int)
    assert not target[rows:, :].any() and not target[:, cols:].any()  # padding is background
    # upsampled back to the image (as predictions are), the target is the mask
    back = postprocess_logits(np.where(target, 1.0, -1.0)[None].astype(np.float32), prepared, size)[0] > 0
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.95


def test_lowres_target_of_a_full_frame_mask_is_full():
    config = get_spec("lite_medsam").preprocess
    assert lowres_target(np.ones((256, 256), bool), config).all()
    half = lowres_target(np.ones((128, 256), bool), config)
    assert half[:128].all() and not half[128:].any()
    assert isinstance(preprocess(np.zeros((128, 256), np.uint8), config), PreparedImage)


# ----------------------------------------------------------------------------------------- samples and data errors


def write_pngs(root: Path, cases, names=None) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        name = names[i] if names else f"case{i}"
        cv2.imwrite(str(root / "images" / f"{name}.png"), case.image)
        cv2.imwrite(str(root / "masks" / f"{name}.png"), case.mask.astype(np.uint8))
    return root


def test_png_samples_keep_uint8_pixels(tmp_path: Path):
    cases = load_sample_cases(["lung2"], slices="all")[:2]
    samples = load_samples(write_pngs(tmp_path / "ds", cases))
    assert [s.name for s in samples] == ["case0", "case1"]
    np.testing.assert_array_equal(samples[0].image, cases[0].image)
    np.testing.assert_array_equal(samples[0].mask, cases[0].mask)


def test_volumes_contribute_every_labelled_slice_with_the_chosen_window(tmp_path: Path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    shutil.copyfile(SAMPLES / "pyradiomics" / "lung1_image.nrrd", root / "images" / "lung1.nrrd")
    shutil.copyfile(SAMPLES / "pyradiomics" / "lung1_label.nrrd", root / "masks" / "lung1.nrrd")
    windowed = load_samples(root, window=parse_window("lung"))
    reference = load_sample_cases(["lung1"], slices="all")  # the shipped case uses the lung window
    assert [s.name for s in windowed] == [f"lung1[2:{c.slice_index}]" for c in reference]
    for sample, case in zip(windowed, reference, strict=True):
        np.testing.assert_array_equal(sample.image, case.image)
        np.testing.assert_array_equal(sample.mask, case.mask)
    custom = load_samples(root, window=parse_window("-1350,150"))
    np.testing.assert_array_equal(custom[0].image, windowed[0].image)
    percentile = load_samples(root)
    assert percentile[0].image.dtype == np.uint8 and not np.array_equal(percentile[0].image, windowed[0].image)
    with pytest.raises(ValueError, match="low,high"):
        parse_window("1,2,3")


def test_all_empty_masks_is_an_error_naming_the_folder(tmp_path: Path):
    cases = load_sample_cases(["lung2"], slices="all")[:2]
    root = write_pngs(tmp_path / "empty_ds", cases)
    for path in (root / "masks").iterdir():
        cv2.imwrite(str(path), np.zeros((512, 512), np.uint8))
    with pytest.raises(DataError, match="no usable training sample") as info:
        load_samples(root)
    assert str(root) in str(info.value) and "case0.png" in str(info.value)


def test_some_empty_masks_are_skipped(tmp_path: Path):
    cases = load_sample_cases(["lung2"], slices="all")[:2]
    root = write_pngs(tmp_path / "ds", cases)
    cv2.imwrite(str(root / "masks" / "case1.png"), np.zeros((512, 512), np.uint8))
    assert [s.name for s in load_samples(root)] == ["case0"]


def test_size_mismatch_names_the_files(tmp_path: Path):
    cases = load_sample_cases(["lung2"], slices="all")[:1]
    root = write_pngs(tmp_path / "ds", cases)
    cv2.imwrite(str(root / "masks" / "case0.png"), np.ones((100, 100), np.uint8))
    with pytest.raises(DataError, match="does not match") as info:
        load_samples(root)
    assert "case0.png" in str(info.value)


@pytest.mark.parametrize("problem", ["missing", "empty_folder", "all_empty_masks", "size_mismatch"])
def test_bad_data_fails_before_anything_is_written(tmp_path: Path, problem: str):
    """train() refuses bad data with the folder or file named, and leaves an existing --out untouched."""
    root = tmp_path / "ds"
    if problem != "missing":
        root.mkdir()
    if problem in ("all_empty_masks", "size_mismatch"):
        write_pngs(root, load_sample_cases(["lung2"], slices="all")[:1])
        shape = (512, 512) if problem == "all_empty_masks" else (64, 64)
        cv2.imwrite(str(root / "masks" / "case0.png"), np.zeros(shape, np.uint8))
    out = tmp_path / "adapter.safetensors"
    out.write_bytes(b"previous adapter")
    with pytest.raises((DataError, FileNotFoundError)) as info:
        train(TrainConfig(data=root, out=out, epochs=1, device="cpu"))
    named = root / "masks" / "case0.png" if problem == "size_mismatch" else root
    assert str(named) in str(info.value) or str(root / "images" / "case0.png") in str(info.value)
    assert out.read_bytes() == b"previous adapter"
    assert not checkpoint_path(out).exists()


def test_validation_folder_errors_name_it(tmp_path: Path):
    data = write_pngs(tmp_path / "train", load_sample_cases(["lung2"], slices="all")[:1])
    with pytest.raises(DataError) as info:
        train(TrainConfig(data=data, val=tmp_path / "nope", out=tmp_path / "a.safetensors", device="cpu"))
    assert str(tmp_path / "nope") in str(info.value)


# ----------------------------------------------------------------------------------------- order and sharding


def test_epoch_order_is_seeded_and_shards_cover_it():
    a, b = epoch_order(7, 0, 3), epoch_order(7, 0, 3)
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(range(7)) and not np.array_equal(a, epoch_order(7, 0, 4))
    padded = epoch_order(7, 0, 3, world_size=2)
    assert len(padded) == 8 and padded[7] == padded[0]
    assert sorted(shard(8, 0, 2) + shard(8, 1, 2)) == list(range(8))
    assert len(epoch_order(1, 0, 0, world_size=3)) == 3


def test_checkpoint_sits_beside_the_adapter(tmp_path: Path):
    assert checkpoint_path(tmp_path / "a.safetensors") == tmp_path / "a.ckpt.pt"
    assert checkpoint_path("runs/x") == Path("runs/x.ckpt.pt")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(data="d", out="o", epochs=0)
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(data="d", out="o", patience=0)
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(hflip=2.0)
