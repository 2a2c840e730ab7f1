"""Images: exact normalised values, the documented fit geometry, PIL pinned, VQ codes stable, lossy round trip."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

import vla_reference.processor as vp
from vla_reference.processor.image import as_rgb, crop_box, fit, letterbox, preprocess_image, to_pixels

pytest_plugins = ["processor_fixtures"]

# golden config: ImageNet mean/std, pad colour round(255 * mean) = (124, 116, 104)
RED = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
PAD = [(124 / 255 - 0.485) / 0.229, (116 / 255 - 0.456) / 0.224, (104 / 255 - 0.406) / 0.225]


def test_pure_red_gives_the_normalised_values_in_rgb_order(make_image_config):
    pixels = preprocess_image(Image.new("RGB", (32, 32), (255, 0, 0)), make_image_config())
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.float32
    for channel, expected in enumerate(RED):
        np.testing.assert_allclose(pixels[channel], expected, rtol=1e-6)


def test_mean_half_is_not_imagenet(make_image_config):
    # the chapter's gotcha: 0.5/0.5 normalisation gives another red entirely
    pixels = preprocess_image(
        Image.new("RGB", (8, 8), (255, 0, 0)), make_image_config(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    )
    np.testing.assert_allclose(pixels[:, 0, 0], [1.0, -1.0, -1.0], rtol=1e-6)
    assert not np.allclose(pixels[:, 0, 0], RED, atol=0.1)


def test_do_normalize_false_leaves_rescaled_pixels(make_image_config):
    pixels = preprocess_image(Image.new("RGB", (8, 8), (255, 128, 0)), make_image_config(do_normalize=False))
    np.testing.assert_allclose(pixels[:, 0, 0], [1.0, 128 / 255, 0.0], rtol=1e-6)


@pytest.mark.parametrize(
    "w, h, expected",
    [
        (64, 32, (32, 16, 0, 8)),  # scale 1/2: 32x16 placed 8 rows down
        (32, 64, (16, 32, 8, 0)),
        (33, 17, (32, 16, 0, 8)),  # scale 32/33: 17 * 32/33 = 16.48 -> 16; (32 - 16) // 2 = 8
        (33, 18, (32, 17, 0, 7)),  # 18 * 32/33 = 17.45 -> 17; (32 - 17) // 2 = 7, the odd row goes to the bottom
        (500, 1, (32, 1, 0, 15)),  # 1 * 32/500 rounds to 0, kept at 1 row; (32 - 1) // 2 = 15
        (32, 32, (32, 32, 0, 0)),
    ],
    ids=["wide", "tall", "odd-33x17", "odd-33x18", "extreme-500x1", "exact"],
)
def test_letterbox_geometry(w, h, expected):
    assert letterbox(w, h, 32, 32) == expected


@pytest.mark.parametrize(
    "w, h, expected",
    [
        (64, 32, (16.0, 0.0, 48.0, 32.0)),
        (32, 64, (0.0, 16.0, 32.0, 48.0)),
        (33, 17, (8.0, 0.0, 25.0, 17.0)),  # keep 17 of 33 columns, centred: (33 - 17) / 2 = 8
        (34, 17, (8.5, 0.0, 25.5, 17.0)),  # an odd leftover is split exactly, not rounded
    ],
    ids=["wide", "tall", "odd-33x17", "odd-34x17"],
)
def test_crop_box_geometry(w, h, expected):
    assert crop_box(w, h, 32, 32) == expected


def test_letterbox_bands_are_exactly_the_pad_colour(make_image_config):
    pixels = preprocess_image(Image.new("RGB", (33, 18), (255, 0, 0)), make_image_config())
    for channel, expected in enumerate(PAD):
        np.testing.assert_allclose(pixels[channel, :7], expected, rtol=1e-6)  # top band: rows 0..6
        np.testing.assert_allclose(pixels[channel, 24:], expected, rtol=1e-6)  # bottom band: rows 24..31
    np.testing.assert_allclose(pixels[:, 7:24, :], np.array(RED)[:, None, None] * np.ones((3, 17, 32)), atol=0.02)


@pytest.mark.parametrize("fit_mode", ["pad", "crop", "stretch"])
@pytest.mark.parametrize("size", [(1, 1), (33, 17), (17, 33), (500, 1), (1, 500), (31, 47)], ids=str)
def test_every_size_and_fit_gives_the_configured_shape(make_image_config, fit_mode, size):
    image = Image.new("RGB", size, (10, 200, 30))
    assert preprocess_image(image, make_image_config(fit=fit_mode)).shape == (3, 32, 32)


def test_crop_keeps_the_centre(make_image_config):
    # left third blue, middle third green, right third blue: the centred square crop sees only green
    array = np.zeros((32, 96, 3), np.uint8)
    array[:, :32, 2] = array[:, 64:, 2] = 255
    array[:, 32:64, 1] = 255
    pixels = preprocess_image(array, make_image_config(fit="crop", resample=0, antialias=False))
    np.testing.assert_allclose(
        pixels[:, 16, 16], [(0 - 0.485) / 0.229, (1 - 0.456) / 0.224, (0 - 0.406) / 0.225], rtol=1e-6
    )


def test_arrays_tensors_and_pil_agree(make_image_config):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(20, 50, 3), dtype=np.uint8)
    cfg = make_image_config()
    from_pil = preprocess_image(Image.fromarray(array), cfg)
    assert np.array_equal(preprocess_image(array, cfg), from_pil)
    assert np.array_equal(preprocess_image(torch.from_numpy(array), cfg), from_pil)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_modes_are_converted_by_pil(make_image_config, mode):
    image = Image.new("RGB", (16, 16), (255, 0, 0)).convert(mode)
    expected = to_pixels(fit(image.convert("RGB"), make_image_config()), make_image_config())
    assert np.array_equal(preprocess_image(image, make_image_config()), expected)


def test_grey_arrays_become_rgb(make_image_config):
    grey = np.full((8, 8), 255, np.uint8)
    assert np.array_equal(
        preprocess_image(grey, make_image_config()),
        preprocess_image(np.full((8, 8, 3), 255, np.uint8), make_image_config()),
    )
    assert np.array_equal(
        preprocess_image(grey[:, :, None], make_image_config()), preprocess_image(grey, make_image_config())
    )


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((8, 8, 3), np.float32), "image array has dtype float32, expected uint8"),
        (np.zeros((3, 8, 8), np.uint8), r"image array has shape \(3, 8, 8\).*channels last"),
        (np.zeros((0, 8, 3), np.uint8), "no pixels"),
        (Image.new("I;16", (4, 4)), "more than 8 bits per channel"),
        ("scene.png", "str is not an image"),
    ],
    ids=["float", "channels-first", "empty", "16-bit", "path"],
)
def test_invalid_images_are_named(make_image_config, image, message):
    with pytest.raises(vp.ItemError, match=message):
        preprocess_image(image, make_image_config())


def test_no_rgb_conversion_means_rgb_only():
    with pytest.raises(vp.ItemError, match="image mode 'L' but do_convert_rgb is false"):
        as_rgb(Image.new("L", (4, 4)), convert_rgb=False)


def test_the_image_processor_is_pinned_to_pil(golden_model):
    for backend in ("pil", "torchvision"):
        ip = AutoImageProcessor.from_pretrained(golden_model, backend=backend)
        assert type(ip) is vp.VLAImageProcessor and ip.backend == "pil"
        assert ip.pixels.filter.name == "bicubic" and ip.resample == 3


def test_batch_call_names_the_bad_image(golden_processor):
    with pytest.raises(vp.ItemError, match=r"item 1 \(image\): image array has dtype float64"):
        golden_processor.image_processor([Image.new("RGB", (4, 4)), np.zeros((4, 4, 3))])


def test_vq_codes_are_those_of_the_colour_lattice(golden_processor):
    out = golden_processor.image_processor(
        Image.new("RGB", (50, 20), (255, 0, 0)), return_codes=True, return_tensors="np"
    )
    # letterbox 50x20 -> 32x13 at rows 9..21: patch rows 0 and 3 are all pad, 1 and 2 are 7/8 and 6/8 red.
    # A flat code is nearest a patch when its colour is nearest the patch's mean colour (per channel, levels
    # 0, 1/3, 2/3, 1). Pad (124, 116, 104)/255 ~ (0.49, 0.45, 0.41): level 1 everywhere, code (1*4 + 1)*4 + 1 = 21.
    # 6/8 red: mean (222, 29, 26)/255 ~ (0.87, 0.11, 0.10): levels (3, 0, 0), code 3 * 16 = 48.
    assert out["image_codes"].tolist() == [[[21] * 4, [48] * 4, [48] * 4, [21] * 4]]


def test_vq_codes_are_identical_across_runs_and_inputs(golden_processor):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    ip = golden_processor.image_processor
    first = ip([array], return_codes=True, return_tensors="np")["image_codes"]
    again = ip(Image.fromarray(array), return_codes=True, return_tensors="np")["image_codes"]
    assert np.array_equal(first, again)


def test_codes_decode_to_a_lossy_copy(golden_processor):
    image = Image.new("RGB", (32, 32), (255, 0, 0))
    ip = golden_processor.image_processor
    codes = ip.encode(preprocess_image(image, ip.pixels))
    decoded = np.asarray(ip.to_image(ip.decode(codes)), dtype=np.int64)
    error = np.abs(decoded - np.asarray(image, dtype=np.int64))
    # the codebook's texture has std 0.05 in normalised units, ~3 grey levels: a close, not exact, copy
    assert error.mean() < 8 and error.max() < 40


def test_decoding_rejects_codes_outside_the_codebook(golden_processor):
    with pytest.raises(vp.ItemError, match=r"codes must be a 2-D grid of indices in \[0, 64\)"):
        golden_processor.image_processor.decode(np.full((4, 4), 64))
