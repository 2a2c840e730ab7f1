"""The golden snapshots' integer outputs hold on any CPU: no code is chosen by a near-tie.

A snapshot stores visual and audio codes exactly. The floats they are chosen from (resampled and
log-mel audio, normalised pixels) differ between CPUs in their last bits (SIMD width, BLAS kernel,
libm), so a vector that sits on the boundary between two codebook rows would flip its code on
another machine and fail a correct release. Every golden input is far from such a boundary.
"""

import json

import numpy as np
import pytest
from processor_fixtures import GOLDEN_MODEL
from transformers import AutoProcessor

from vla_reference.preprocessing import CASES, record
from vla_reference.processor import codebook, image, video

# float32 features of magnitude <= 4 move by ~1e-6 between CPUs; keep two decades above that
MIN_MARGIN = 1e-4


@pytest.fixture(scope="module")
def margins():
    """The smallest tie margin of every nearest-code search, per golden case (dense and MoE)."""
    found: dict[tuple[str, str], float] = {}
    current: list[tuple[str, str]] = []
    search = codebook.nearest

    def recording(vectors, book):
        codes = search(vectors, book)
        key = current[-1]
        found[key] = min(found.get(key, np.inf), float(codebook.tie_margin(vectors, book, codes).min(initial=np.inf)))
        return codes

    with pytest.MonkeyPatch.context() as mp:
        for module in (codebook, image, video):  # every module that binds the search by name
            mp.setattr(module, "nearest", recording)
        for model in (GOLDEN_MODEL, GOLDEN_MODEL.parent.parent / "moe" / "model"):
            processor = AutoProcessor.from_pretrained(model)
            config = json.loads((model / "processor_config.json").read_text())
            for case in CASES:
                current.append((model.parent.name, case))
                record(processor, case, version="1.0.0", processor_config=config)
    return found


def test_every_code_bearing_case_is_searched(margins):
    cases = {case for _, case in margins}
    assert {"audio_tone", "audio_sweep_resampled", "image_edges", "video", "mixed"} <= cases


def test_no_golden_code_is_a_near_tie(margins):
    close = {k: v for k, v in margins.items() if v < MIN_MARGIN}
    assert not close, f"codes within {MIN_MARGIN} of a tie (they would flip on another CPU): {close}"


def test_the_margin_is_the_distance_to_the_bisector():
    book = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    x = np.array([[0.5, 0.0], [1.0, 0.0]])
    m = codebook.tie_margin(x, book, codebook.nearest(x, book))
    assert m.tolist() == pytest.approx([0.5, 0.0])  # x=1 is on the boundary between rows 0 and 1
