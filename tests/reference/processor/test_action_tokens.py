"""Actions: named tokens, bins by hand, decode within half a bin, keys never guessed, malformed never zeros."""

import json

import numpy as np
import pytest
import torch

import vla_reference.processor as vp
from vla_reference.processor.actions import bin_centers, normalize, to_bins
from vla_reference.tokenizer import VLA_TOKENS

pytest_plugins = ["processor_fixtures"]

# golden: 32 bins over [-1, 1] (width 1/16), q01/q99 normalisation; nuplan q01 (-0.42, -3.2, -1), q99 (0.42, 2.4, 1),
# mask (true, true, false)


@pytest.fixture(scope="module")
def actions(golden_processor):
    return golden_processor.vla.actions


def test_every_named_action_has_its_token(golden_processor):
    for action in vp.Action:
        token = f"<|act:{action.value}|>"
        assert token in VLA_TOKENS
        ids = golden_processor([action])["input_ids"][0].tolist()
        assert golden_processor.tokenizer.convert_ids_to_tokens(ids) == [
            "<|begin_of_text|>",
            "<|action_start|>",
            token,
            "<|action_end|>",
        ]


def test_normalisation_and_bins_by_hand(actions):
    stats = actions.norm_stats["nuplan"]
    x = np.array([[0.0, 2.4, 0.5], [-0.42, -0.4, -1.0]])
    # steer 0: 2 (0 + 0.42) / 0.84 - 1 = 0; accel 2.4 = q99 -> 1; signal (mask false) passes through: 0.5
    # steer -0.42 = q01 -> -1; accel -0.4: 2 (-0.4 + 3.2) / 5.6 - 1 = 0
    np.testing.assert_allclose(normalize(x, stats, actions), [[0.0, 1.0, 0.5], [-1.0, 0.0, -1.0]], atol=1e-12)
    # bin = floor((v + 1) * 16), the top edge in the last bin: 0 -> 16, 1 -> 31, 0.5 -> 24, -1 -> 0
    assert to_bins(normalize(x, stats, actions), actions).tolist() == [[16, 31, 24], [0, 16, 0]]
    np.testing.assert_allclose(bin_centers(actions)[[0, 16, 31]], [-1 + 1 / 32, 1 / 32, 1 - 1 / 32])


def test_vector_tokens_are_offset_bins(golden_processor):
    ids = golden_processor([vp.ActionVector([0.0, 2.4, 0.5], key="nuplan")])["input_ids"][0].tolist()
    offset = golden_processor.action_token_offset
    assert ids[1:] == [
        golden_processor.token_map.roles["action_start"],
        offset + 16,
        offset + 31,
        offset + 24,
        golden_processor.token_map.roles["action_end"],
    ]
    assert golden_processor.tokenizer.convert_ids_to_tokens(offset + 16) == "<|action_bin_16|>"


@pytest.mark.parametrize("key", ["nuplan", "waymo_open"])
def test_decode_error_is_at_most_half_a_bin(golden_processor, actions, key):
    stats = actions.norm_stats[key]
    low, high = np.array(stats.array("q01")), np.array(stats.array("q99"))
    rng = np.random.default_rng(0)
    chunk = rng.uniform(low, high, size=(50, 3))
    ids = golden_processor([vp.ActionVector(chunk, key=key)])["input_ids"][0, 1:]
    decoded = golden_processor.decode_actions(ids, unnorm_key=key)
    # half a bin is (1/32) in normalised units; in dataset units (1/32) * (q99 - q01) / 2 on normalised dims
    half_bin = np.where(stats.mask, (high - low) / 2, 1.0) / 32
    assert decoded.shape == (50, 3)
    assert (np.abs(decoded - chunk) <= half_bin + 1e-12).all()


def test_lists_arrays_and_tensors_encode_alike(golden_processor):
    values = [[0.1, -1.0, 1.0], [0.2, 0.3, -1.0]]
    outs = [
        golden_processor([vp.ActionVector(v, key="nuplan")])["input_ids"].tolist()
        for v in (values, np.array(values), torch.tensor(values), (tuple(values[0]), tuple(values[1])))
    ]
    assert all(o == outs[0] for o in outs)


def test_several_keys_need_the_key_to_encode(golden_processor):
    with pytest.raises(
        vp.ItemError, match=r"ActionVector.key is required: norm_stats has 2 dataset keys \['nuplan', 'waymo_open'\]"
    ):
        golden_processor([vp.ActionVector([0.0, 0.0, 0.0])])


def test_several_keys_need_unnorm_key_to_decode(golden_processor):
    ids = golden_processor([vp.ActionVector([0.0, 0.0, 0.0], key="nuplan")])["input_ids"][0, 1:]
    with pytest.raises(vp.ActionDecodeError, match="unnorm_key is required: norm_stats has 2 dataset keys"):
        golden_processor.decode_actions(ids)
    with pytest.raises(
        vp.ActionDecodeError, match=r"dataset key 'bridge' is not in norm_stats; known keys: \['nuplan'"
    ):
        golden_processor.decode_actions(ids, unnorm_key="bridge")


def test_one_key_is_not_a_guess(actions):
    only = vp.ActionConfig.from_json(
        {**json.loads(json.dumps(actions.to_json())), "norm_stats": {"nuplan": actions.norm_stats["nuplan"].to_json()}}
    )
    from vla_reference.processor.actions import select_stats

    assert select_stats(only, None).key == "nuplan"


def test_malformed_sequences_are_named(golden_processor):
    roles = golden_processor.token_map.roles
    start, end, offset = roles["action_start"], roles["action_end"], golden_processor.action_token_offset
    bins = [offset + 16] * 3
    cases = [
        ([start, *bins, 5, end], rf"position 4: token 5 \(.*\) is not an action bin \(ids {offset}..{offset + 31}\)"),
        ([offset, offset + 1], "2 action bins do not fill whole 3-dimensional actions of dataset key 'nuplan'"),
        ([], "no action tokens to decode"),
        ([start, end], "no action tokens to decode"),
        ([start, *bins], r"opens with <\|action_start\|> but ends with <\|action_bin_16\|>"),
        ([offset, roles["image"], offset], r"position 1: token \d+ \(<\|image\|>\) is not an action bin"),
    ]
    for ids, message in cases:
        with pytest.raises(vp.ActionDecodeError, match=message):
            golden_processor.decode_actions(ids, unnorm_key="nuplan")


@pytest.mark.parametrize(
    "values, message",
    [
        ([0.0, 0.0], r"action values have shape \(2,\), expected \[3\] or \[T, 3\] for dataset key 'nuplan'"),
        ([0.0, float("nan"), 0.0], "action values contain NaN or infinity"),
        (["left", 0, 0], "action values are not numbers"),
    ],
    ids=["wrong-dim", "nan", "strings"],
)
def test_invalid_vectors_are_named(golden_processor, values, message):
    with pytest.raises(vp.ItemError, match=rf"item 0 \(action\): {message}"):
        golden_processor([vp.ActionVector(values, key="nuplan")])


def test_clipping_keeps_out_of_range_values_in_the_end_bins(golden_processor, actions):
    ids = golden_processor([vp.ActionVector([5.0, -50.0, 3.0], key="nuplan")])["input_ids"][0, 2:-1]
    assert (ids - golden_processor.action_token_offset).tolist() == [31, 0, 31]


def test_config_json_mirrors_the_processor_stats(golden_processor, golden_model):
    config = json.loads((golden_model / "config.json").read_text())
    assert vp.norm_stats_mismatches(config, golden_processor) == []
    config["norm_stats"]["nuplan"]["q99"][0] = 0.5
    assert vp.norm_stats_mismatches(config, golden_processor) == [
        "norm_stats.nuplan: config.json "
        f"{config['norm_stats']['nuplan']}, processor {golden_processor.vla.actions.norm_stats['nuplan'].to_json()}"
    ]
    assert vp.norm_stats_mismatches({}, golden_processor) == ["config.json has no norm_stats"]
