"""The tensor snapshot format: exact integers, floats within one 8-bit level, readable differences."""

from __future__ import annotations

import re

import pytest
import torch

from pytest_vla.snapshots import SnapshotData, compare, parse, serialize


def snap(**outputs):
    return serialize(SnapshotData(outputs, {"release_version": "1.0.0", "processor_config": {"image": {"size": 32}}}))


def test_round_trip_through_text():
    ids = torch.tensor([[5, 6, 7, 8]])
    text = snap(input_ids=ids, pixels=torch.linspace(-2.0, 2.0, 64).reshape(1, 4, 4, 4), note="x")
    header, entries = parse(text)
    assert header["release_version"] == "1.0.0"
    assert entries["input_ids"].ints == (5, 6, 7, 8) and entries["input_ids"].shape == (1, 4)
    assert entries["pixels"].dtype == "float32" and entries["pixels"].shape == (1, 4, 4, 4)
    assert compare(text, text) == []


def test_integers_are_exact():
    a, b = snap(ids=torch.tensor([1, 2, 3])), snap(ids=torch.tensor([1, 9, 3]))
    assert compare(b, a)[0] == "ids: 1 of 3 values differ; first at (1,): 9, recorded 2"


def test_floats_within_one_level_match_and_beyond_do_not():
    x = torch.linspace(0.0, 1.0, 256)
    level = 1.0 / 255
    assert compare(snap(x=x + 0.6 * level), snap(x=x)) == []
    diff = compare(snap(x=x + 3 * level), snap(x=x))
    assert diff[0].startswith("x: ") and "off by more than one 8-bit level" in diff[0]


def test_dtype_and_shape_are_strict():
    x = torch.zeros(2, 3)
    assert compare(snap(x=x.double()), snap(x=x))[0] == "x: float64 [2, 3], recorded float32 [2, 3]"
    assert compare(snap(x=x.reshape(3, 2)), snap(x=x))[0] == "x: float32 [3, 2], recorded float32 [2, 3]"


def test_changed_config_key_is_named():
    recorded = serialize(SnapshotData({"x": torch.ones(3)}, {"processor_config": {"image": {"mean": [0.5]}}}))
    received = serialize(SnapshotData({"x": torch.ones(3) * 2}, {"processor_config": {"image": {"mean": [0.485]}}}))
    assert "processor config image.mean: [0.485], recorded [0.5]" in compare(received, recorded)


def test_missing_and_extra_outputs():
    diff = compare(snap(a=torch.ones(1)), snap(b=torch.ones(1)))
    assert "b: missing from the outputs" in diff and "a: not in the snapshot" in diff


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: t.replace("[3] exact\n  1 2 3", "[3] exact\n  1 2"), "ids: 2 values recorded for shape [3]"),
        (lambda t: t.replace("[3] exact", "[-3] exact"), "ids: shape [-3] is not a list of sizes"),
        (lambda t: t.replace("q8 lo=", "q8 low="), "'lo'"),
        (lambda t: re.sub(r"(q8 lo=\S+ hi=\S+\n  )\S+", r"\1AAAA", t), "x: 3 values recorded for shape [2, 3]"),
        (lambda t: re.sub(r"(q8 lo=\S+ hi=\S+\n  )\S", r"\1*", t), "Only base64 data is allowed"),
        (lambda t: re.sub(r"snapshot\n\{.*\}\n", "snapshot\n[1]\n", t), "the header is not a JSON object"),
    ],
    ids=["value-missing", "negative-size", "range-key-renamed", "levels-cut", "levels-not-base64", "header-a-list"],
)
def test_damaged_snapshot_files_are_refused_naming_the_file(tmp_path, damage, message):
    from vla_reference.errors import MalformedFileError
    from vla_reference.preprocessing import load_snapshot

    text = snap(ids=torch.tensor([1, 2, 3]), x=torch.linspace(0.0, 1.0, 6).reshape(2, 3))
    path = tmp_path / "case.vla.txt"
    path.write_text(text)
    assert load_snapshot(path)[1]["release_version"] == "1.0.0"  # the undamaged file reads
    damaged = damage(text)
    assert damaged != text
    path.write_text(damaged)
    pattern = rf"unreadable snapshot: .*{re.escape(message)}.*\[{re.escape(str(path))}\]"
    with pytest.raises(MalformedFileError, match=pattern):
        load_snapshot(path)


def test_snapshot_images_of_a_changed_image_only():
    """expected, actual and |difference| PNGs of the first image of each differing image output."""
    import base64
    import io

    from PIL import Image

    from vla_reference.preprocessing import snapshot_images

    img = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    other = img.clone()
    other[0, :, 2:4, 2:4] += 0.5
    recorded = snap(pixel_values=img, ids=torch.arange(4), flat=torch.ones(3, 4))
    assert snapshot_images(recorded, recorded) == {}
    got = snapshot_images(snap(pixel_values=other, ids=torch.arange(4), flat=torch.ones(3, 4)), recorded)
    assert set(got) == {"pixel_values"} and set(got["pixel_values"]) == {"expected", "actual", "difference"}
    diff = Image.open(io.BytesIO(base64.b64decode(got["pixel_values"]["difference"])))
    assert diff.size == (8, 8) and diff.mode == "RGB"
    pixels = {(x, y): diff.getpixel((x, y)) for x in range(8) for y in range(8)}
    changed = {xy for xy, v in pixels.items() if max(v) > 0}
    assert changed == {(x, y) for x in (2, 3) for y in (2, 3)}, sorted(changed)
