"""Dataset folders: images/ + masks/ by stem, or dataset.json; errors name the file or folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gmiseg_edge.data import DataError, MissingFileError, find_pairs, sample_data_dir

SAMPLES = sample_data_dir()
CT = SAMPLES / "totalsegmentator" / "example_ct_sm.nii.gz"
CT_SEG = SAMPLES / "totalsegmentator" / "example_seg.nii.gz"
BREAST = SAMPLES / "pyradiomics" / "breast1_image.nrrd"
BREAST_SEG = SAMPLES / "pyradiomics" / "breast1_label.nrrd"
NUCLEI = SAMPLES / "stardist" / "img2d.tif"
NUCLEI_SEG = SAMPLES / "stardist" / "mask2d.tif"


def make_folder(root: Path, images: dict[str, Path], masks: dict[str, Path]) -> Path:
    for sub, files in (("images", images), ("masks", masks)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name, src in files.items():
            shutil.copyfile(src, root / sub / name)
    return root


def test_folder_pairs_by_stem_with_double_extensions(tmp_path: Path):
    root = make_folder(
        tmp_path / "ds",
        {"abdomen.nii.gz": CT, "breast.nrrd": BREAST, "nuclei.tif": NUCLEI},
        {"abdomen.nii.gz": CT_SEG, "breast.nrrd": BREAST_SEG, "nuclei.tiff": NUCLEI_SEG},
    )
    (root / "images" / ".DS_Store").write_bytes(b"junk")
    pairs = find_pairs(root)
    assert [p.name for p in pairs] == ["abdomen", "breast", "nuclei"]
    assert pairs[0].image.name == "abdomen.nii.gz" and pairs[0].mask.name == "abdomen.nii.gz"
    assert pairs[2].mask.name == "nuclei.tiff" and pairs[0].label is None
    image, mask = pairs[1].read()
    assert image.array.shape == mask.array.shape == (45, 120, 21)


def test_json_with_labels_relative_to_json(tmp_path: Path):
    data = make_folder(tmp_path / "ds" / "data", {"ct.nii.gz": CT, "n.tif": NUCLEI}, {"seg.nii.gz": CT_SEG})
    (tmp_path / "ds" / "dataset.json").write_text(
        json.dumps(
            [
                {"image": "data/images/ct.nii.gz", "mask": "data/masks/seg.nii.gz", "label": 5},
                {
                    "image": "data/images/ct.nii.gz",
                    "mask": "data/masks/seg.nii.gz",
                    "name": "spleen",
                    "label": 1,
                },
                {"image": "data/images/n.tif", "mask": str(NUCLEI_SEG)},
            ]
        )
    )
    pairs = find_pairs(tmp_path / "ds")
    assert [(p.name, p.label) for p in pairs] == [("ct", 5), ("spleen", 1), ("n", None)]
    assert pairs[0].image == data / "images" / "ct.nii.gz"
    assert pairs[2].mask == NUCLEI_SEG  # absolute paths are kept
    _, mask = pairs[0].read()
    assert np.any(mask.array == pairs[0].label)
    # the JSON file itself can be given, and {"cases": [...]} works too
    (tmp_path / "ds" / "other.json").write_text(
        json.dumps({"cases": [{"image": "data/images/n.tif", "mask": str(NUCLEI_SEG)}]})
    )
    assert len(find_pairs(tmp_path / "ds" / "other.json")) == 1


def test_missing_and_empty_folders(tmp_path: Path):
    with pytest.raises(MissingFileError) as exc:
        find_pairs(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty") as exc:
        find_pairs(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(exc.value)
    make_folder(tmp_path / "hollow", {}, {})
    with pytest.raises(DataError, match="empty") as exc:
        find_pairs(tmp_path / "hollow")
    assert str(tmp_path / "hollow") in str(exc.value)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="not a dataset folder") as exc:
        find_pairs(tmp_path / "other")
    assert str(tmp_path / "other") in str(exc.value)


def test_image_without_mask_is_named(tmp_path: Path):
    root = make_folder(tmp_path / "ds", {"a.nrrd": BREAST, "b.nrrd": BREAST}, {"a.nrrd": BREAST_SEG})
    with pytest.raises(DataError, match="without a mask") as exc:
        find_pairs(root)
    assert str(root / "images" / "b.nrrd") in str(exc.value)


def test_mask_without_image_is_named(tmp_path: Path):
    root = make_folder(tmp_path / "ds", {"a.nrrd": BREAST}, {"a.nrrd": BREAST_SEG, "c.nrrd": BREAST_SEG})
    with pytest.raises(DataError, match="without an image") as exc:
        find_pairs(root)
    assert str(root / "masks" / "c.nrrd") in str(exc.value)


def test_duplicate_stem_and_unsupported_file(tmp_path: Path):
    root = make_folder(tmp_path / "ds", {"a.nrrd": BREAST, "a.nii.gz": CT}, {"a.nrrd": BREAST_SEG})
    with pytest.raises(DataError, match="share the stem 'a'") as exc:
        find_pairs(root)
    assert str(root / "images") in str(exc.value)
    root = make_folder(tmp_path / "ds2", {"a.nrrd": BREAST}, {"a.nrrd": BREAST_SEG})
    (root / "masks" / "a.csv").write_text("1,2")
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'") as exc:
        find_pairs(root)
    assert str(root / "masks" / "a.csv") in str(exc.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[", "invalid JSON at line 1"),
        ("[]", "empty"),
        ('{"images": []}', "expected a list"),
        ('["x.png"]', "entry 0 is str"),
        ('[{"image": "x.png"}]', "entry 0 has no 'mask'"),
        ('[{"image": "missing.png", "mask": "m.png"}]', "image file .*missing.png not found"),
        ('[{"image": "i.tif", "mask": "m.tif", "label": "liver"}]', "'label' must be a non-zero integer"),
        ('[{"image": "i.tif", "mask": "m.tif", "label": true}]', "'label' must be a non-zero integer"),
    ],
)
def test_bad_json(tmp_path: Path, content: str, message: str):
    shutil.copyfile(NUCLEI, tmp_path / "i.tif")
    shutil.copyfile(NUCLEI_SEG, tmp_path / "m.tif")
    path = tmp_path / "dataset.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as exc:
        find_pairs(tmp_path)
    assert str(path) in str(exc.value)


def test_symlinks_to_files_outside_the_folder_are_read_with_a_warning(tmp_path: Path, caplog):
    """Issue 26: a support folder's symlinks to files outside it were followed silently."""
    root = make_folder(tmp_path / "ds", {"a.tif": NUCLEI}, {"a.tif": NUCLEI_SEG})
    (root / "images" / "b.tif").symlink_to(NUCLEI)  # outside the folder
    (root / "masks" / "b.tif").symlink_to(root / "masks" / "a.tif")  # inside it: no warning of its own
    with caplog.at_level("WARNING", logger="gmiseg_edge.data.dataset"):
        pairs = find_pairs(root)
    assert [p.name for p in pairs] == ["a", "b"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"{root}: 1 file(s) are symlinks to files outside the folder, and are read from there: "
                        f"images/b.tif -> {NUCLEI.resolve()}"], warnings
    caplog.clear()
    find_pairs(make_folder(tmp_path / "plain", {"a.tif": NUCLEI}, {"a.tif": NUCLEI_SEG}))
    assert not caplog.records
