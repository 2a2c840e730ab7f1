"""The processor as a whole: Auto* loading, exact save round trip, token ranges, batching, truncation, counts."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

import vla_reference.processor as vp
from vla_reference.errors import ReleaseError
from vla_reference.processor.tokens import MODALITIES
from vla_reference.tokenizer import SPECIAL_TOKENS

pytest_plugins = ["processor_fixtures"]

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, size=(20, 50, 3), dtype=np.uint8)
FRAMES = [RNG.integers(0, 256, size=(12, 16, 3), dtype=np.uint8) for _ in range(9)]
SAMPLES = np.sin(np.arange(4000) / 16000 * 2 * np.pi * 330.0)


def _mixed():
    return [
        "Describe the scene:",
        Image.fromarray(IMAGE),
        vp.Video(FRAMES, fps=3.0, camera="front"),
        vp.Audio(SAMPLES, sampling_rate=16000),
        "then",
        vp.Action.TURN_LEFT,
        vp.ActionVector([0.1, -0.5, 1.0], key="waymo_open"),
        vp.Script3D("cube 1"),
        vp.IPA("stop"),
    ]


def test_auto_classes_return_the_reference_processor(golden_processor):
    assert type(golden_processor) is vp.VLAProcessor
    assert type(golden_processor.image_processor) is vp.VLAImageProcessor
    assert type(golden_processor.video_processor) is vp.VLAVideoProcessor
    assert type(golden_processor.feature_extractor) is vp.VLAFeatureExtractor
    assert (
        golden_processor.image_processor.codebook is not None
        and golden_processor.feature_extractor.codebook is not None
    )


def test_save_pretrained_round_trips_byte_identical(golden_processor, golden_model, tmp_path):
    golden_processor.save_pretrained(tmp_path)
    for name in (vp.PROCESSOR_CONFIG, vp.LEGACY_PREPROCESSOR_CONFIG, vp.LEGACY_VIDEO_CONFIG):
        assert (tmp_path / name).read_bytes() == (golden_model / name).read_bytes(), name
    for name in ("visual_codebook.safetensors", "audio_codebook.safetensors"):
        assert (tmp_path / name).read_bytes() == (golden_model / name).read_bytes(), name
    again = AutoProcessor.from_pretrained(tmp_path)
    assert again.to_json_string() == golden_processor.to_json_string()
    again.save_pretrained(tmp_path / "twice")
    assert (tmp_path / "twice" / vp.PROCESSOR_CONFIG).read_bytes() == (golden_model / vp.PROCESSOR_CONFIG).read_bytes()
    items = _mixed()
    a, b = golden_processor(items), again(items)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_builder_writes_what_golden_ships(golden_processor, golden_model, tmp_path):
    rebuilt = vp.reference_processor(golden_processor.tokenizer, seed=1)  # golden/dense is seed 1
    vp.write_processor_files(rebuilt, tmp_path)
    for path in sorted(tmp_path.iterdir()):
        assert path.read_bytes() == (golden_model / path.name).read_bytes(), path.name


def test_legacy_readers_see_the_same_values(golden_model, golden_config):
    legacy = json.loads((golden_model / vp.LEGACY_PREPROCESSOR_CONFIG).read_text())
    for section in ("image_processor", "feature_extractor"):
        for key, value in golden_config[section].items():
            assert legacy[key] == value, key
    video = json.loads((golden_model / vp.LEGACY_VIDEO_CONFIG).read_text())
    assert {k: v for k, v in video.items() if k != "processor_class"} == golden_config["video_processor"]


def test_legacy_files_alone_load_the_sub_processors(golden_processor, golden_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(golden_model, model)
    (model / vp.PROCESSOR_CONFIG).unlink()
    assert AutoImageProcessor.from_pretrained(model).to_dict() == golden_processor.image_processor.to_dict()
    assert AutoFeatureExtractor.from_pretrained(model).to_dict() == golden_processor.feature_extractor.to_dict()
    assert AutoVideoProcessor.from_pretrained(model).to_dict() == golden_processor.video_processor.to_dict()


def test_a_tampered_codebook_is_refused(golden_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(golden_model, model)
    data = bytearray((model / "visual_codebook.safetensors").read_bytes())
    data[-1] ^= 1
    (model / "visual_codebook.safetensors").write_bytes(bytes(data))
    with pytest.raises(vp.CodebookError, match="SHA-256 is .*, the config pins"):
        AutoProcessor.from_pretrained(model)


def test_offsets_must_agree_with_the_tokenizer(golden_processor, rebuild_processor):
    offset = golden_processor.visual_token_offset
    match = rf"visual_token_offset is {offset + 1} but '<\|vq_0\|>' has id {offset}, expected {offset + 1}"
    with pytest.raises(vp.ProcessorConfigError, match=match):
        rebuild_processor(visual_token_offset=offset + 1)


def test_unknown_tokens_are_named(rebuild_processor, golden_processor_kwargs):
    templates = {**golden_processor_kwargs["token_templates"], "camera": "<|cam:{}|>"}
    with pytest.raises(
        vp.ProcessorConfigError, match=r"token_templates.camera: '<\|cam:front\|>' is not in the tokenizer"
    ):
        rebuild_processor(token_templates=templates)
    with pytest.raises(vp.ProcessorConfigError, match=r"tokens.image: 'tion' \(id \d+\) is a text token"):
        rebuild_processor(tokens={**golden_processor_kwargs["tokens"], "image": "tion"})


def test_missing_processor_keys_are_named(golden_processor):
    parts = (
        golden_processor.image_processor,
        golden_processor.video_processor,
        golden_processor.feature_extractor,
        golden_processor.tokenizer,
    )
    with pytest.raises(
        vp.ProcessorConfigError, match="processor.image_token_mode is missing.*processor.actions is missing"
    ):
        vp.VLAProcessor(*parts)


def test_token_ranges_are_disjoint_and_never_text(golden_processor):
    tm = golden_processor.token_map
    roles = {golden_processor.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS.by_role().values()}
    code_ranges = [set(range(offset, offset + count)) for offset, count in tm.ranges.values()]
    for i, ids in enumerate(code_ranges):
        assert ids <= tm.added and not ids & roles
        for other in code_ranges[i + 1 :]:
            assert not ids & other
    for m in MODALITIES[1:]:
        assert tm.modality_ids(m.name) <= tm.added and not tm.modality_ids(m.name) & roles, m.name


def test_every_token_lies_in_its_modality_range(golden_processor):
    out = golden_processor([_mixed(), ["just text"]], return_mm_token_type_ids=True)
    tm = golden_processor.token_map
    names = {m.type_id: m.name for m in MODALITIES}
    for ids, types, mask in zip(
        out["input_ids"].tolist(), out["mm_token_type_ids"].tolist(), out["attention_mask"].tolist(), strict=True
    ):
        for pos, (t, m, on) in enumerate(zip(ids, types, mask, strict=True)):
            if not on:
                assert t == tm.pad
            elif names[m] == "text":
                assert t not in tm.added or (pos == 0 and t == tm.bos)
            elif names[m] == "script":  # keywords are script tokens, numbers are text
                assert t in tm.modality_ids("script") or t not in tm.added
            else:
                assert t in tm.modality_ids(names[m]), (pos, names[m], golden_processor.describe_token(t))


def test_counts_match_the_prediction(golden_processor):
    out = golden_processor([_mixed()], return_mm_token_type_ids=True)
    types = out["mm_token_type_ids"][0].tolist()
    predicted = golden_processor._get_num_multimodal_tokens(
        image_sizes=[(20, 50)], video_sizes=[(9, 3.0)], audio_lengths=[(4000, 16000)]
    )
    assert types.count(1) == predicted.num_image_tokens[0] == 2 + 4 * 5
    # 9 frames at 3 fps: n = floor(9 * 2 / 3) = 6 frames, 3 groups of (camera, timestamp, 4 x 5)
    assert types.count(2) == predicted.num_video_tokens[0] == 2 + 3 * 22
    # 4000 samples: 1 + 4000 // 160 = 26 frames, ceil(26 / 4) = 7 codes of 2 stages
    assert types.count(3) == predicted.num_audio_tokens[0] == 2 + 2 * 7


def test_resampled_audio_count_is_predicted(golden_processor):
    clip = vp.Audio(np.sin(np.arange(11025) / 44100 * 2 * np.pi * 440.0), sampling_rate=44100)
    out = golden_processor([clip], return_mm_token_type_ids=True)
    assert (
        out["mm_token_type_ids"][0].tolist().count(3)
        == golden_processor._get_num_multimodal_tokens(audio_lengths=[(11025, 44100)]).num_audio_tokens[0]
    )


def test_outputs_and_shapes(golden_processor):
    out = golden_processor(_mixed())
    assert out["input_ids"].shape == out["attention_mask"].shape and out["input_ids"].dtype == torch.long
    assert out["pixel_values"].shape == (1, 3, 32, 32) and out["image_codes"].shape == (1, 4, 4)
    assert out["pixel_values_videos"].shape == (3, 2, 3, 32, 32) and out["video_grid_thw"].tolist() == [[3, 4, 4]]
    assert out["input_features"].shape == (1, 16, 26) and out["audio_codes"].shape == (1, 2, 7)
    assert "mm_token_type_ids" not in out


def test_batch_of_one_equals_row_of_n(golden_processor):
    one = _mixed()
    other = ["short", Image.new("RGB", (10, 90), (0, 0, 255))]
    batch = golden_processor([one, other])
    alone, alone_other = golden_processor(one), golden_processor(other)
    n = alone["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][0, :n], alone["input_ids"][0])
    assert torch.equal(batch["input_ids"][1, : alone_other["input_ids"].shape[1]], alone_other["input_ids"][0])
    assert torch.equal(batch["pixel_values"], torch.cat([alone["pixel_values"], alone_other["pixel_values"]]))
    assert torch.equal(batch["video_codes"], alone["video_codes"])


def test_repeated_calls_are_identical(golden_processor):
    a, b = golden_processor(_mixed()), golden_processor(_mixed())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_arrays_and_pil_images_agree(golden_processor):
    a = golden_processor(["x", Image.fromarray(IMAGE)])
    b = golden_processor(["x", IMAGE])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_numpy_and_list_outputs(golden_processor):
    np_out = golden_processor(_mixed(), return_tensors="np")
    assert isinstance(np_out["input_ids"], np.ndarray)
    lists = golden_processor([["a"], ["a much longer text"]], padding=False, return_tensors=None)
    assert [len(x) for x in lists["input_ids"]] == [
        2,
        len(golden_processor.tokenizer("a much longer text")["input_ids"]) + 1,
    ]


def test_right_and_left_padding(golden_processor, rebuild_processor):
    out = golden_processor([["a"], ["a b c d"]])
    assert out["attention_mask"][0].tolist() == [1, 1] + [0] * (out["input_ids"].shape[1] - 2)
    out = rebuild_processor(padding_side="left")([["a"], ["a b c d"]])
    assert out["attention_mask"][0].tolist() == [0] * (out["input_ids"].shape[1] - 2) + [1, 1]
    assert out["input_ids"][0, 0].item() == golden_processor.tokenizer.pad_token_id


def test_padding_to_max_length(golden_processor):
    out = golden_processor(["a"], padding="max_length", max_length=10)
    assert out["input_ids"].shape == (1, 10) and out["attention_mask"].sum().item() == 2


def test_ragged_tensors_need_padding(golden_processor):
    with pytest.raises(
        ReleaseError, match=r"sequences have lengths \[2, \d+\]; pt tensors need one length.*padding=True"
    ):
        golden_processor([["a"], ["a b c"]], padding=False)


def test_max_length_padding_never_leaves_ragged_tensors(golden_processor):
    # BOS + "a", and BOS + "a", " b", " c", " d": 2 and 5 tokens, the second longer than max_length
    with pytest.raises(
        ReleaseError, match=r"sequences have lengths \[2, 5\]; pt tensors need one length and max_length is 4"
    ):
        golden_processor([["a"], ["a b c d"]], padding="max_length", max_length=4)


def test_truncation_cuts_text_and_drops_later_items(golden_processor):
    items = ["a b c d e f g h", Image.fromarray(IMAGE)]
    out = golden_processor(items, truncation=True, max_length=4)
    assert out["input_ids"].shape == (1, 4) and "pixel_values" not in out
    text = golden_processor(["a b c d e f g h"])["input_ids"][0, :4]
    assert torch.equal(out["input_ids"][0], text)


def test_truncation_never_splits_an_item(golden_processor):
    with pytest.raises(
        vp.ItemError, match=r"item 1 \(image\): truncation to max_length=10 would cut this item's 22 tokens after"
    ):
        golden_processor(["a", Image.fromarray(IMAGE)], truncation=True, max_length=10)


@pytest.mark.parametrize(
    "batch, message",
    [
        ([["a"], ["b", 42]], r"sequence 1, item 1 \(int\): int is not a processor item"),
        (["look", {"image": "x.png"}], r"item 1 \(dict\): dict is not a processor item"),
        (["a <|image|> b"], r"item 0 \(text\): text contains control token\(s\) \['<\|image\|>'\]"),
        ([], "the sequence has no items"),
        ([["a"], []], "sequence 1 has no items"),
    ],
    ids=["int", "dict", "control-token", "empty", "empty-row"],
)
def test_invalid_items_name_item_and_position(golden_processor, batch, message):
    with pytest.raises(vp.ItemError, match=message):
        golden_processor(batch)


def test_item_errors_carry_their_position(golden_processor):
    with pytest.raises(vp.ItemError) as e:
        golden_processor([["a"], ["b", vp.Video(FRAMES, fps=None, camera="front")]])
    assert (e.value.batch, e.value.index, e.value.kind, e.value.key) == (1, 1, "video", "items[1][1]")


def test_image_tokens_decode_back_to_codes_and_pixels(golden_processor):
    out = golden_processor([Image.fromarray(IMAGE)])
    codes = golden_processor.image_codes_from_tokens(out["input_ids"][0, 1:])
    assert np.array_equal(codes, out["image_codes"][0].numpy())
    assert golden_processor.decode_image(codes).size == (32, 32)


def test_malformed_image_tokens_are_named(golden_processor):
    ids = golden_processor([Image.fromarray(IMAGE)])["input_ids"][0, 1:].tolist()
    ids[5] = golden_processor.token_map.roles["image"]  # the row separator of row 0 sits at position 5
    with pytest.raises(vp.ItemError, match=r"position 5: <\|image\|> where the row separator belongs"):
        golden_processor.image_codes_from_tokens(ids)


def test_placeholder_mode(rebuild_processor):
    ph = rebuild_processor(image_token_mode="placeholder")
    out = ph([Image.fromarray(IMAGE), vp.Video(FRAMES, fps=3.0, camera="front")])
    tokens = ph.tokenizer.convert_ids_to_tokens(out["input_ids"][0].tolist())
    # LLaVA style: 4 x 4 = 16 <|image|> per image and per temporal group; pixels instead of codes
    assert tokens[1:19] == ["<|image_start|>"] + ["<|image|>"] * 16 + ["<|image_end|>"]
    assert tokens.count("<|image|>") == 16 + 3 * 16
    assert "image_codes" not in out and "video_codes" not in out and out["pixel_values"].shape == (1, 3, 32, 32)
    assert ph._get_num_multimodal_tokens(image_sizes=[(1, 1)]).num_image_tokens == [18]


def test_preprocessing_record_names_what_ran(golden_processor):
    record = golden_processor.preprocessing_record()
    assert record["image_backend"] == record["video_backend"] == "pil"
    assert record["resample"] == "bicubic" and record["antialias"] is True and record["audio_resampling"] == "fft"
