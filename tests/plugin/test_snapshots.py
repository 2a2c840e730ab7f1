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
        (
            lambda t: t.replace("[3] exact\n  (0,) 1 2 3", "[3] exact\n  (0,) 1 2"),
            "ids: 2 values recorded for shape [3]",
        ),
        (lambda t: t.replace("[3] exact", "[-3] exact"), "ids: shape [-3] is not a list of sizes"),
        (lambda t: t.replace("q8 lo=", "q8 low="), "'lo'"),
        (lambda t: t.replace("  (1, 0) 99 cc ff\n", ""), "x: 3 values recorded for shape [2, 3]"),
        (lambda t: t.replace("(1, 0) 99 cc ff", "(1, 0) 99 cc fg"), "invalid literal for int() with base 16"),
        (lambda t: t.replace("(1, 0) 99 cc ff", "(1, 0) 99 cc 1ff"), "bytes must be in range(0, 256)"),
        (
            lambda t: t.replace(" hex\n  (0, 0) 00 33 66\n  (1, 0) 99 cc ff", "\n  *AAA"),
            "Only base64 data is allowed",
        ),
        (
            lambda t: re.sub(r"snapshot\n\{.*?\n\}\n", "snapshot\n[1]\n", t, flags=re.S),
            "the header is not a JSON object",
        ),
        (lambda t: t.replace('\n  "release_version"', "\n  release_version"), "Expecting property name"),
    ],
    ids=[
        "value-missing",
        "negative-size",
        "range-key-renamed",
        "levels-cut",
        "level-not-hex",
        "level-over-255",
        "first-layout-levels-not-base64",
        "header-a-list",
        "header-not-json",
    ],
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


def test_a_changed_value_is_one_changed_line():
    """In a code review a changed pixel or token shows as one changed line, at its index."""
    img = torch.linspace(-1, 1, 3 * 4 * 40).reshape(1, 3, 4, 40)
    ids = torch.arange(50).reshape(1, 50)
    other, other_ids = img.clone(), ids.clone()
    other[0, 1, 2, 35] = -1.0  # the range stays the same: only that level changes
    other_ids[0, 40] = 7
    a = snap(pixel_values=img, input_ids=ids).splitlines()
    b = snap(pixel_values=other, input_ids=other_ids).splitlines()
    changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    assert len(a) == len(b) and len(changed) == 2, changed
    assert changed[0][0].startswith("  (0, 32) ") and changed[1][0].startswith("  (0, 1, 2, 32) "), changed
    assert all(len(line) <= 120 for line in a)
    header = a[1 : a.index("}") + 1]
    assert len(header) > 3 and header[0] == "{"  # one key a line


def test_the_first_layout_still_reads():
    """A snapshot written before the line-per-row layout (one-line header, base64) parses to the same."""
    import base64
    import json

    levels = bytes(range(0, 240, 20))
    old = "\n".join(
        [
            "# pytest-vla preprocessing snapshot",
            json.dumps({"release_version": "1.0.0", "processor_config": {"image": {"size": 32}}}),
            "input_ids: int64 [1, 3] exact",
            "  5 6 7",
            "pixel_values: float32 [1, 3, 2, 2] q8 lo=-1.0 hi=1.0",
            "  " + base64.b64encode(levels).decode(),
        ]
    )
    header, entries = parse(old + "\n")
    assert header["release_version"] == "1.0.0"
    assert entries["input_ids"].ints == (5, 6, 7) and entries["pixel_values"].levels == levels
