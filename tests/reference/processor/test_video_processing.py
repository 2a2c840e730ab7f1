"""Video: the pinned sampling formula, fps never defaulted, tubelets with last-frame repetition, timestamps."""

import numpy as np
import pytest
from PIL import Image
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

import vla_reference.processor as vp
from vla_reference.processor.image import preprocess_image
from vla_reference.processor.video import plan_video

pytest_plugins = ["processor_fixtures"]


def _frames(n, size=(24, 40)):
    return [np.full((*size, 3), (7 * i) % 256, np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def video_cfg(golden_processor):
    # golden: sample_fps 2, max_frames 8, temporal_patch_size 2, timestamp_interval 1 s
    return golden_processor.video_processor.video


@pytest.mark.parametrize(
    "frames, fps, indices, stamps",
    [
        # n = floor(30 * 2 / 10) = 6; i_k = k * 30 // 6; groups start at frames 0, 10, 20 = 0 s, 1 s, 2 s
        (30, 10.0, (0, 5, 10, 15, 20, 25), (0, 1, 2)),
        # n = floor(100 * 2 / 10) = 20, capped at 8; i_k = k * 100 // 8; groups at 0, 2.5, 5, 7.5 s
        (100, 10.0, (0, 12, 25, 37, 50, 62, 75, 87), (0, 2, 5, 7)),
        # n = floor(15 * 2 / 10) = 3, padded to 4 by repeating frame 10; groups at 0 s and 1 s
        (15, 10.0, (0, 5, 10, 10), (0, 1)),
        # n = max(1, floor(1 * 2 / 30)) = 1; padded by repetition
        (1, 30.0, (0, 0), (0,)),
        # NTSC: n = floor(30 * 2 / 29.97) = 2: frames 0 and 15 form one group at 0 s
        (30, 29.97, (0, 15), (0,)),
    ],
    ids=["30@10", "capped-100@10", "padded-15@10", "single-frame", "ntsc"],
)
def test_sampling_formula(video_cfg, frames, fps, indices, stamps):
    plan = plan_video(frames, fps, video_cfg)
    assert plan.indices == indices
    assert plan.timestamps == stamps


@pytest.mark.parametrize(
    "fps, message",
    [
        (None, "fps is missing; sampling and timestamps depend on it and it is never guessed"),
        (0.0, "fps must be a positive finite number, found 0.0"),
        (float("nan"), "fps must be a positive finite number, found nan"),
        (True, "fps must be a positive finite number, found True"),
    ],
    ids=["missing", "zero", "nan", "bool"],
)
def test_fps_is_never_defaulted(golden_processor, fps, message):
    video = vp.Video(_frames(4), fps=fps, camera="front")
    with pytest.raises(vp.ItemError, match=rf"item 1 \(video\): {message}"):
        golden_processor(["look:", video])


def test_tubelets_and_grid(golden_processor):
    out = golden_processor.video_processor(
        vp.Video(_frames(15), fps=10.0, camera="front"), return_codes=True, return_tensors="np"
    )
    assert out["pixel_values_videos"].shape == (2, 2, 3, 32, 32)  # 2 groups of 2 frames
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert out["video_codes"].shape == (2, 4, 4)
    # the last group is frame 10 twice (last-frame repetition)
    assert np.array_equal(out["pixel_values_videos"][1, 0], out["pixel_values_videos"][1, 1])


def test_a_static_video_has_the_codes_of_its_frame(golden_processor):
    red = np.zeros((20, 50, 3), np.uint8)
    red[..., 0] = 255
    vid = golden_processor.video_processor(
        vp.Video([red] * 10, fps=5.0, camera="rear"), return_codes=True, return_tensors="np"
    )
    img = golden_processor.image_processor(red, return_codes=True, return_tensors="np")
    assert np.array_equal(vid["video_codes"][0], img["image_codes"][0])


def test_frames_go_through_the_image_pipeline(golden_processor):
    frames = _frames(4)
    out = golden_processor.video_processor(vp.Video(frames, fps=2.0, camera="front"), return_tensors="np")
    # n = floor(4 * 2 / 2) = 4: every frame, in order
    for k in range(4):
        expected = preprocess_image(frames[k], golden_processor.video_processor.pixels)
        assert np.array_equal(out["pixel_values_videos"][k // 2, k % 2], expected)


def test_list_and_stacked_frames_agree(golden_processor):
    frames = _frames(12)
    as_list = golden_processor([vp.Video(frames, fps=6.0, camera="left")])
    as_array = golden_processor([vp.Video(np.stack(frames), fps=6.0, camera="left")])
    as_pil = golden_processor([vp.Video([Image.fromarray(f) for f in frames], fps=6.0, camera="left")])
    for other in (as_array, as_pil):
        assert all(np.array_equal(as_list[k].numpy(), other[k].numpy()) for k in as_list)


def test_timestamp_and_camera_tokens_open_each_group(golden_processor):
    ids = golden_processor([vp.Video(_frames(30), fps=10.0, camera="rear")])["input_ids"][0].tolist()
    tokens = golden_processor.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[1] == "<|video_start|>" and tokens[-1] == "<|video_end|>"
    group = 2 + 4 * 5  # camera, timestamp, 4 rows of 4 codes + separator
    heads = [tokens[2 + g * group : 4 + g * group] for g in range(3)]
    assert heads == [["<|camera:rear|>", "<|t_0|>"], ["<|camera:rear|>", "<|t_1|>"], ["<|camera:rear|>", "<|t_2|>"]]


def test_unknown_camera_is_named(golden_processor):
    with pytest.raises(vp.ItemError, match=r"camera 'roof' is not one of the config's cameras \['front', 'left'"):
        golden_processor([vp.Video(_frames(2), fps=1.0, camera="roof")])


def test_videos_past_the_last_timestamp_are_refused(golden_processor):
    # 400 frames at 1 fps: 8 frames sampled, groups start at frames 0, 100, 200, 300 = 0 s, 100 s, ...
    with pytest.raises(vp.ItemError, match=r"group 1 starts at 100 s or later.*Fix: trim the video to under 32 s"):
        golden_processor([vp.Video(_frames(400, size=(4, 4)), fps=1.0, camera="front")])


@pytest.mark.parametrize(
    "frames, message",
    [
        ([], "the video has no frames"),
        (np.zeros((4, 4), np.uint8), r"video array has shape \(4, 4\)"),
        ("clip.mp4", "video frames are a str"),
        ([np.zeros((4, 4, 3), np.float32)], "frame 0: image array has dtype float32"),
    ],
    ids=["empty", "2-d-array", "path", "float-frame"],
)
def test_invalid_frames_are_named(golden_processor, frames, message):
    with pytest.raises(vp.ItemError, match=rf"item 0 \(video\): {message}"):
        golden_processor([vp.Video(frames, fps=10.0, camera="front")])


def test_the_video_processor_is_pinned_to_pil(golden_model):
    vid = AutoVideoProcessor.from_pretrained(golden_model)
    assert type(vid) is vp.VLAVideoProcessor and vid.backend == "pil"
