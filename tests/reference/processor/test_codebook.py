"""Codebooks: nearest code in float64 with ties to the lowest index, residual stages, exact files."""

import hashlib

import numpy as np
import pytest

from vla_reference.processor.codebook import (
    Codebook,
    audio_codebooks,
    nearest,
    residual_decode,
    residual_quantize,
    visual_codebook,
)
from vla_reference.processor.errors import CodebookError


def test_ties_go_to_the_lowest_index():
    # 0.5 is exactly halfway between 0 and 1; 2.0 is equidistant from rows 1 and 2 (both at distance 1)
    book = np.array([[0.0], [1.0], [3.0]])
    assert nearest(np.array([[0.5], [2.0]]), book).tolist() == [0, 1]


def test_the_search_runs_in_float64():
    # in float32 the query rounds to 0.5, a tie resolved to row 0; in float64 it is nearer row 1
    query = np.array([[0.5 + 1e-10]])
    assert nearest(query, np.array([[0.0], [1.0]])).tolist() == [1]
    assert nearest(query.astype(np.float32), np.array([[0.0], [1.0]])).tolist() == [0]


def test_nearest_is_exact_over_chunks():
    rng = np.random.default_rng(0)
    x, book = rng.normal(size=(600, 5)), rng.normal(size=(7, 5))
    brute = np.argmin(((x[:, None, :] - book[None]) ** 2).sum(-1), axis=1)
    assert nearest(x, book).tolist() == brute.tolist()


def test_residual_stages_quantise_what_is_left():
    # stage 0 picks 10 (nearest to 11), stage 1 picks 1 (nearest to the residual 1): 10 + 1 = 11
    books = np.array([[[0.0], [10.0]], [[0.0], [1.0]]])
    codes = residual_quantize(np.array([[11.0], [0.4]]), books)
    assert codes.tolist() == [[1, 0], [1, 0]]
    assert residual_decode(codes, books).tolist() == [[11.0], [0.0]]


def test_colour_lattice_codes_are_their_colours():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    book = visual_codebook(7, size=64, patch_size=2, mean=mean, std=std, jitter=0.0)
    # 64 codes = 4 levels per channel; code 48 = (3, 0, 0) = pure red, code 21 = (1, 1, 1) = grey 1/3
    red = [(1.0 - 0.485) / 0.229] * 4 + [(0.0 - 0.456) / 0.224] * 4 + [(0.0 - 0.406) / 0.225] * 4
    grey = [(1 / 3 - 0.485) / 0.229] * 4 + [(1 / 3 - 0.456) / 0.224] * 4 + [(1 / 3 - 0.406) / 0.225] * 4
    np.testing.assert_allclose(book[48], red, rtol=1e-6)
    np.testing.assert_allclose(book[21], grey, rtol=1e-6)


def test_generation_is_seeded():
    kw = dict(size=64, patch_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert np.array_equal(visual_codebook(1, **kw), visual_codebook(1, **kw))
    assert not np.array_equal(visual_codebook(1, **kw), visual_codebook(2, **kw))
    assert np.array_equal(audio_codebooks(3, n_q=2, size=4, dim=3), audio_codebooks(3, n_q=2, size=4, dim=3))


def test_a_lattice_needs_a_cube_number_of_codes():
    with pytest.raises(ValueError, match="cube number of codes"):
        visual_codebook(0, size=60, patch_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_files_are_byte_deterministic_and_carry_their_hash(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = Codebook.from_array("book.safetensors", "codebook", array, {"seed": "1"})
    b = Codebook.from_array("book.safetensors", "codebook", array.copy(), {"seed": "1"})
    assert a.data == b.data
    assert a.sha256 == hashlib.sha256(a.data).hexdigest()
    path = a.write(tmp_path)
    loaded = Codebook.load(path, file="book.safetensors", tensor="codebook", sha256=a.sha256, shape=(3, 4))
    assert np.array_equal(loaded.vectors, array)


def test_a_changed_file_fails_its_hash(tmp_path):
    a = Codebook.from_array("book.safetensors", "codebook", np.zeros((2, 2), np.float32), {})
    path = a.write(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        CodebookError, match=rf"SHA-256 is [0-9a-f]{{64}}, the config pins {a.sha256}.*book.safetensors"
    ):
        Codebook.load(path, file="book.safetensors", tensor="codebook", sha256=a.sha256, shape=(2, 2))


def test_a_misshapen_codebook_is_named(tmp_path):
    a = Codebook.from_array("book.safetensors", "codebook", np.zeros((2, 2), np.float32), {})
    with pytest.raises(CodebookError, match=r"shape \(2, 2\), the config expects \(4, 2\)"):
        Codebook.load(a.write(tmp_path), file="book.safetensors", tensor="codebook", sha256=a.sha256, shape=(4, 2))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CodebookError, match="cannot read the codebook"):
        Codebook.load(
            tmp_path / "nope.safetensors", file="nope.safetensors", tensor="codebook", sha256="0" * 64, shape=(1,)
        )
