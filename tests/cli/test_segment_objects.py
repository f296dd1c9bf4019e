"""``gmiseg-edge segment`` with several boxes: one object each, decoded together, a label map and a colour per
object; the box file format and its errors; the colour overlay itself."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app
from gmiseg_edge.cli.parse import parse_boxes
from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prompts import boxes_from_labels
from gmiseg_edge.data import load_sample_cases, load_sample_pair
from gmiseg_edge.jobs.overlays import label_boundaries, label_overlay, palette

runner = CliRunner()


def test_label_overlay_gives_each_object_its_own_colour_and_outline():
    colours = palette(125)
    assert len({tuple(c) for c in colours}) == 126 and tuple(colours[0]) == (0, 0, 0)
    grey = np.full((20, 30), 100, np.uint8)
    labels = np.zeros((20, 30), np.uint8)
    labels[2:8, 2:14], labels[2:8, 14:25] = 1, 2  # two touching objects
    out = label_overlay(grey, labels)
    edge = label_boundaries(labels)
    assert edge[5, 13] and edge[5, 14] and not edge[5, 8]  # the shared border is drawn on both sides
    assert (out[5, 13] == colours[1]).all() and (out[5, 14] == colours[2]).all()
    assert (out[15, 5] == 100).all()  # background stays grey: nothing painted between objects
    assert not (out[5, 8] == out[5, 20]).all()  # two objects, two tints


def test_box_arguments_and_box_files(tmp_path):
    assert parse_boxes(["1,2,3,4"]) == ((1.0, 2.0, 3.0, 4.0), ())  # one --box: one prompt, as before
    assert parse_boxes(["1,2,3,4", "5,6,7,8"])[1] == ((1, 2, 3, 4), (5, 6, 7, 8))
    listed = tmp_path / "boxes.txt"
    listed.write_text("# x0 y0 x1 y1\n1,2,3,4\n\n5 6 7 8  # second\n")
    assert parse_boxes(None, listed) == (None, ((1, 2, 3, 4), (5, 6, 7, 8)))
    (tmp_path / "boxes.json").write_text("[[1, 2, 3, 4]]")
    assert parse_boxes(["9,9,9,9"], tmp_path / "boxes.json")[1] == ((9, 9, 9, 9), (1, 2, 3, 4))
    (tmp_path / "bad.txt").write_text("1,2,3,4\n1,2,3\n")
    with pytest.raises(InputError, match=r"bad.txt, line 2: expected x0,y0,x1,y1"):
        parse_boxes(None, tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="no boxes"):
        parse_boxes(None, tmp_path / "empty.txt")
    with pytest.raises(InputError, match="no such file"):
        parse_boxes(None, tmp_path / "missing.txt")


def test_segment_several_boxes_writes_a_label_map_and_a_colour_overlay(exported_models, tmp_path):
    model_dir = exported_models("lite_medsam").folder
    case = load_sample_cases(["dsb_nuclei"])[0]
    instances = load_sample_pair("dsb_nuclei")[1].array
    cv2.imwrite(str(tmp_path / "nuclei.png"), case.image)
    ids, boxes = boxes_from_labels(instances)
    pick = [3, 40, 41, 90]
    (tmp_path / "boxes.txt").write_text("\n".join(",".join(f"{v:g}" for v in boxes[i]) for i in pick[1:]))
    result = runner.invoke(app, [
        "segment", "--model-dir", str(model_dir), "--image", str(tmp_path / "nuclei.png"), "--backend", "ort",
        "--box", ",".join(f"{v:g}" for v in boxes[pick[0]]), "--boxes", str(tmp_path / "boxes.txt"),
        "--out", str(tmp_path / "out"), "--overlay"])
    assert result.exit_code == 0, result.output
    labels = cv2.imread(str(tmp_path / "out" / "nuclei_mask.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3, 4}
    for k, i in enumerate(pick, start=1):  # object k is the k-th box, and lands on its nucleus
        truth = instances == ids[i]
        assert (labels[truth] == k).mean() > 0.6, k
    overlay = cv2.imread(str(tmp_path / "out" / "nuclei_overlay.png"))
    assert overlay.shape == (*case.image.shape, 3)

    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(tmp_path / "nuclei.png"),
                                 "--boxes", str(tmp_path / "boxes.txt"), "--point", "5,5,1", "--out",
                                 str(tmp_path / "out2")])
    assert result.exit_code == 1 and "without --point" in result.output
    assert not (tmp_path / "out2" / "nuclei_mask.png").exists()


def test_segment_instances_prompts_each_instance_of_the_label_map(exported_models, tmp_path):
    model_dir = exported_models("lite_medsam").folder
    image = load_sample_cases(["dsb_nuclei"])[0].image[:128, :128]
    instances = load_sample_pair("dsb_nuclei")[1].array[:128, :128].astype(np.uint16)
    ids = np.unique(instances)[1:]
    cv2.imwrite(str(tmp_path / "crop.png"), image)
    cv2.imwrite(str(tmp_path / "crop_instances.png"), instances)
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(tmp_path / "crop.png"),
                                 "--mask", str(tmp_path / "crop_instances.png"), "--instances", "--backend", "ort",
                                 "--out", str(tmp_path / "out"), "--overlay"])
    assert result.exit_code == 0, result.output
    labels = cv2.imread(str(tmp_path / "out" / "crop_mask.png"), cv2.IMREAD_UNCHANGED)
    assert 3 <= len(ids) <= 255 and labels.max() == len(ids)  # instance k (ascending id) -> label k
    hits = [(labels[instances == value] == k).mean() for k, value in enumerate(ids, start=1)]
    assert np.median(hits) > 0.6, hits
    assert (tmp_path / "out" / "crop_overlay.png").is_file()

    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(tmp_path / "crop.png"),
                                 "--instances", "--out", str(tmp_path / "out2")])
    assert result.exit_code == 1 and "--instances needs its label map" in result.output
