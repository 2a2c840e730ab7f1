"""VLAProcessor: mixed items in, one batch of model inputs out; every parameter from processor_config.json.

Token layout per item (``<|x|>`` are the config's ``tokens`` and ``token_templates``):

    text        the tokenizer's ids (no special tokens; a text item may not contain control tokens)
    image (vq)  <|image_start|> (code code .. code <|row_sep|>) x rows <|image_end|>
    image (ph)  <|image_start|> <|image|> x rows*cols <|image_end|>
    video       <|video_start|> (<|camera:c|> <|t_k|> group) x groups <|video_end|>, group as an image body
    audio       <|audio_start|> (code_0 .. code_{n_q-1}) x T <|audio_end|>
    Action      <|action_start|> <|act:name|> <|action_end|>
    ActionVector <|action_start|> bin x (T * D) <|action_end|>
    Script3D    <|script_start|> (<|blender:kw|> number-text..) x statements <|script_end|>
    IPA         <|ipa_start|> <|ipa_p|> x phones <|ipa_end|>

A sequence starts with the BOS token when ``add_bos_token``. See docs/processor.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import PIL
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessorMixin
from transformers.video_processing_utils import VideoProcessorMixin

from ..errors import ReleaseError
from .actions import Action, ActionVector, decode_action_tokens, encode_actions
from .config import LEGACY_PREPROCESSOR_CONFIG, LEGACY_VIDEO_CONFIG, PROCESSOR_CONFIG, PROCESSOR_KEYS, ProcessorConfig
from .errors import ItemError, ProcessorConfigError
from .image import preprocess_image
from .ipa import segment_ipa
from .items import IPA, Audio, Script3D, Video
from .script3d import parse_script, script_pieces
from .tokens import MODALITIES, TokenMap, resolve_tokens
from .video import plan_video

__all__ = ["VLAProcessor", "ITEM_KINDS"]

# first match wins: Action is a str, so it comes before text
ITEM_KINDS: Final[tuple[tuple[type | tuple[type, ...], str], ...]] = (
    (Action, "action"),
    (ActionVector, "action"),
    (str, "text"),
    (Video, "video"),
    (Audio, "audio"),
    (Script3D, "script"),
    (IPA, "ipa"),
    ((Image.Image, np.ndarray, torch.Tensor), "image"),
)
_TYPE_IDS: Final = {m.name: m.type_id for m in MODALITIES}
_PADDINGS: Final = {True: "longest", "longest": "longest", "max_length": "max_length", False: None, "do_not_pad": None}


def _kind(item: Any) -> str | None:
    return next((kind for types, kind in ITEM_KINDS if isinstance(item, types)), None)


@dataclass
class _Segment:
    """One item's tokens in a sequence (``item`` -1 is the BOS token)."""

    item: int
    modality: str
    ids: list[int]


@dataclass
class _Encoded:
    """One sequence: its segments and each item's modality payload (pixels, features, codes)."""

    segments: list[_Segment]
    payloads: dict[int, tuple[str, Any]]


class VLAProcessor(ProcessorMixin):
    """The reference multimodal processor: image, video and audio processors plus the tokenizer package.

    Every argument after the four sub-processors is a key of ``processor_config.json``; none has a
    default (transformers passes them by name, so they cannot be keyword-only).

    Example:
        >>> import vla_reference.processor  # registers the classes with the Auto* factories
        >>> processor = AutoProcessor.from_pretrained("release/model")  # doctest: +SKIP
        >>> batch = processor(["Describe:", Image.open("scene.png"), Action.STOP])  # doctest: +SKIP
        >>> sorted(batch)  # doctest: +SKIP
        ['attention_mask', 'image_codes', 'input_ids', 'pixel_values']
    """

    def __init__(
        self,
        image_processor: Any = None,
        video_processor: Any = None,
        feature_extractor: Any = None,
        tokenizer: Any = None,
        image_token_mode: str | None = None,
        add_bos_token: bool | None = None,
        padding_side: str | None = None,
        tokens: dict[str, str] | None = None,
        token_templates: dict[str, str] | None = None,
        visual_token_offset: int | None = None,
        audio_token_offset: int | None = None,
        action_token_offset: int | None = None,
        timestamp_token_offset: int | None = None,
        n_timestamps: int | None = None,
        cameras: list[str] | None = None,
        ipa_phones: list[str] | None = None,
        script_decimals: int | None = None,
        actions: dict[str, Any] | None = None,
        chat_template: str | None = None,
    ) -> None:
        given = dict(locals())
        self.vla = ProcessorConfig.from_json({k: given[k] for k in PROCESSOR_KEYS if given[k] is not None})
        for key, value in self.vla.to_json().items():
            setattr(self, key, value)  # ProcessorMixin.to_dict saves __init__ arguments found on self
        super().__init__(image_processor, video_processor, feature_extractor, tokenizer, chat_template=chat_template)
        self._check_parts()
        audio = feature_extractor.audio
        counts = {
            "visual_code": image_processor.pixels.codebook_size,
            "audio_code": audio.n_q * audio.audio_codebook_size,
            "action_bin": self.vla.actions.n_bins,
            "timestamp": self.vla.n_timestamps,
        }
        self.token_map: TokenMap = resolve_tokens(tokenizer, self.vla, counts)

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
        # transformers looks "VideoProcessorMixin" up by name at its top level, which exports it only
        # when torchvision is installed; the video processor here needs no torchvision
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(
                    f"Received a {type(argument).__name__} for video_processor, expected a VideoProcessorMixin"
                )
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    def _check_parts(self) -> None:
        image, video = self.image_processor.pixels, self.video_processor.pixels
        problems = []
        if self.vla.image_token_mode == "vq" and image.codebook_file is None:
            problems.append("image_token_mode is 'vq' but image_processor.codebook_file is null")
        for key in ("codebook_file", "codebook_sha256", "codebook_size", "patch_size"):
            if getattr(image, key) != getattr(video, key):
                problems.append(
                    f"video_processor.{key} is {getattr(video, key)!r}, image_processor.{key} is "
                    f"{getattr(image, key)!r}: frames and images share one visual codebook"
                )
        if problems:
            raise ProcessorConfigError(
                f"{PROCESSOR_CONFIG}: {'; '.join(problems)}",
                key="image_processor",
                fix="make the image and video processors name the same codebook and patch size",
            )

    # ---- the call -------------------------------------------------------------------------------

    def __call__(  # type: ignore[override]
        self,
        items: Any = None,
        *,
        padding: bool | str = True,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        return_mm_token_type_ids: bool = False,
    ) -> BatchFeature:
        """Process one sequence of mixed items, or a batch (a list of such lists).

        Items: ``str`` (text), PIL image or uint8 array/tensor (image), :class:`Video`, :class:`Audio`,
        :class:`Action`, :class:`ActionVector`, :class:`Script3D`, :class:`IPA`.

        Args:
            items: One sequence (list of items, or a single item) or a batch (list of lists).
            padding: ``True``/``"longest"``, ``"max_length"`` or ``False``; the side is ``padding_side``.
            truncation: Cut sequences to ``max_length`` (default: the tokenizer's ``model_max_length``);
                a cut inside a non-text item raises instead of splitting it.
            max_length: The length for truncation and ``padding="max_length"``.
            return_tensors: ``"pt"``, ``"np"`` or ``None`` (lists for the token keys).
            return_mm_token_type_ids: Add ``mm_token_type_ids`` (0 text, 1 image, 2 video, 3 audio,
                4 action, 5 script, 6 ipa; delimiters count as their modality).

        Returns:
            ``input_ids``, ``attention_mask`` and, for the modalities present, ``pixel_values``
            ``[N, 3, H, W]`` (+ ``image_codes`` ``[N, rows, cols]`` in vq mode), ``pixel_values_videos``
            ``[G, tp, 3, H, W]`` and ``video_grid_thw`` ``[V, 3]`` (+ ``video_codes`` ``[G, rows, cols]``),
            ``input_features`` ``[A, feature_size, F]``, ``feature_attention_mask`` ``[A, F]`` and
            ``audio_codes`` ``[A, n_q, T]`` (padded with -1). Arrays run over items in batch order.

        Raises:
            ItemError: an invalid item, naming its sequence, position and kind.
            ReleaseError: invalid padding/truncation arguments, or ragged sequences with tensors asked.
        """
        if padding not in _PADDINGS:
            raise ReleaseError(f"padding={padding!r}", key="padding", fix="pass True, 'longest', 'max_length' or False")
        limit = max_length if max_length is not None else self.tokenizer.model_max_length
        if (truncation or _PADDINGS[padding] == "max_length") and (not isinstance(limit, int) or limit < 1):
            raise ReleaseError(f"max_length={limit!r}", key="max_length", fix="pass a positive max_length")
        batch, single = self._as_batch(items)
        encoded = [self._encode_sequence(seq, b if not single else None) for b, seq in enumerate(batch)]
        if truncation:
            encoded = [self._truncate(e, limit, b if not single else None) for b, e in enumerate(encoded)]
        data = self._pad([e.segments for e in encoded], _PADDINGS[padding], limit, return_tensors)
        if not return_mm_token_type_ids:
            data.pop("mm_token_type_ids")
        data.update(self._collate([e.payloads for e in encoded]))
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _as_batch(items: Any) -> tuple[list[list[Any]], bool]:
        if isinstance(items, (list, tuple)) and items and all(isinstance(s, (list, tuple)) for s in items):
            batch, single = [list(s) for s in items], False
        elif isinstance(items, (list, tuple)):
            batch, single = [list(items)], True
        elif items is None:
            batch, single = [[]], True
        else:
            batch, single = [[items]], True
        for b, seq in enumerate(batch):
            if not seq:
                where = "the sequence" if single else f"sequence {b}"
                raise ItemError(f"{where} has no items", fix="pass at least one item (text, image, ...)")
        return batch, single

    def _encode_sequence(self, seq: Sequence[Any], b: int | None) -> _Encoded:
        bos = self.token_map.bos  # resolve_tokens refused add_bos_token without a BOS token
        segments = [_Segment(-1, "text", [bos])] if self.vla.add_bos_token and bos is not None else []
        payloads: dict[int, tuple[str, Any]] = {}
        for i, item in enumerate(seq):
            kind = _kind(item)
            try:
                if kind is None:
                    raise ItemError(
                        f"{type(item).__name__} is not a processor item",
                        fix="pass str, an image, Video, Audio, Action, ActionVector, Script3D or IPA",
                    )
                ids, payload = self._ENCODERS[kind](self, item)
            except ItemError as e:
                raise e.located(batch=b, index=i, kind=kind or type(item).__name__) from e
            segments.append(_Segment(i, kind, ids))
            if payload is not None:
                payloads[i] = (kind, payload)
        return _Encoded(segments, payloads)

    # ---- one item -> (ids, payload) -------------------------------------------------------------

    def _text(self, text: str) -> tuple[list[int], None]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        control = sorted({self.tokenizer.convert_ids_to_tokens(t) for t in ids if t in self.token_map.added})
        if control:
            raise ItemError(
                f"text contains control token(s) {control}",
                fix="pass images, videos, actions... as items, not as their tokens in text",
            )
        return list(ids), None

    def _grid_ids(self, codes: np.ndarray | None) -> list[int]:
        """An image body: rows of codes each ended by the row separator, or the placeholders."""
        rows, cols = self.image_processor.pixels.grid
        tm = self.token_map
        if codes is None:
            return [tm.roles["image"]] * (rows * cols)
        out: list[int] = []
        for row in codes:
            out.extend(tm.code("visual_code", int(c)) for c in row)
            out.append(tm.roles["row_sep"])
        return out

    def _vq(self) -> bool:
        return self.vla.image_token_mode == "vq"

    def _image(self, image: Any) -> tuple[list[int], dict[str, Any]]:
        pixels = preprocess_image(image, self.image_processor.pixels)
        codes = self.image_processor.encode(pixels) if self._vq() else None
        roles = self.token_map.roles
        return [roles["image_start"], *self._grid_ids(codes), roles["image_end"]], {"pixels": pixels, "codes": codes}

    def _video(self, video: Video) -> tuple[list[int], Any]:
        tm = self.token_map
        if video.camera not in tm.cameras:
            raise ItemError(
                f"camera {video.camera!r} is not one of the config's cameras {sorted(tm.cameras)}",
                fix="name the camera as the model was trained (cameras in processor_config.json)",
            )
        feats = self.video_processor.process_one(video, return_codes=self._vq())
        ids = [tm.roles["video_start"]]
        for g, k in enumerate(feats.plan.timestamps):
            if k >= self.vla.n_timestamps:
                interval = self.video_processor.video.timestamp_interval
                raise ItemError(
                    f"group {g} starts at {k * interval:g} s or later, past the last timestamp token "
                    f"(<|t_{self.vla.n_timestamps - 1}|>, {self.vla.n_timestamps} x {interval:g} s)",
                    fix=f"trim the video to under {self.vla.n_timestamps * interval:g} s",
                )
            ids += [tm.cameras[video.camera], tm.code("timestamp", k)]
            ids += self._grid_ids(None if feats.codes is None else feats.codes[g])
        return ids + [tm.roles["video_end"]], feats

    def _audio(self, audio: Audio) -> tuple[list[int], Any]:
        feats = self.feature_extractor.process_one(audio, return_codes=True)
        size = self.feature_extractor.audio.audio_codebook_size
        ids = [self.token_map.roles["audio_start"]]
        for frame in feats.codes.T:  # time-major, stages in order within a frame
            ids.extend(self.token_map.code("audio_code", q * size + int(c)) for q, c in enumerate(frame))
        return ids + [self.token_map.roles["audio_end"]], feats

    def _action(self, action: Action | ActionVector) -> tuple[list[int], None]:
        tm = self.token_map
        if isinstance(action, Action):
            body = [tm.actions[action]]
        else:
            body = [tm.code("action_bin", int(b)) for b in encode_actions(action, self.vla.actions)]
        return [tm.roles["action_start"], *body, tm.roles["action_end"]], None

    def _script(self, script: Script3D) -> tuple[list[int], None]:
        tm = self.token_map
        ids = [tm.roles["script_start"]]
        for kind, text in script_pieces(parse_script(script.text, decimals=self.vla.script_decimals)):
            if kind == "keyword":
                ids.append(tm.script[text])
            else:
                ids.extend(self.tokenizer(" " + text, add_special_tokens=False)["input_ids"])
        return ids + [tm.roles["script_end"]], None

    def _ipa(self, ipa: IPA) -> tuple[list[int], None]:
        tm = self.token_map
        phones = segment_ipa(ipa.text, self.vla.ipa_phones)
        return [tm.roles["ipa_start"], *(tm.ipa[p] for p in phones), tm.roles["ipa_end"]], None

    _ENCODERS: Final[dict[str, Callable[..., tuple[list[int], Any]]]] = {
        "text": _text,
        "image": _image,
        "video": _video,
        "audio": _audio,
        "action": _action,
        "script": _script,
        "ipa": _ipa,
    }

    # ---- batch assembly -------------------------------------------------------------------------

    def _truncate(self, enc: _Encoded, limit: int, b: int | None) -> _Encoded:
        kept, used = [], 0
        for seg in enc.segments:
            room = limit - used
            if room <= 0:
                break
            if len(seg.ids) <= room:
                kept.append(seg)
                used += len(seg.ids)
                continue
            if seg.modality != "text":
                raise ItemError(
                    f"truncation to max_length={limit} would cut this item's {len(seg.ids)} tokens after {room}",
                    fix="raise max_length, or drop or shorten items so that whole items fit",
                ).located(batch=b, index=seg.item, kind=seg.modality)
            kept.append(_Segment(seg.item, seg.modality, seg.ids[:room]))
            break
        items = {s.item for s in kept}
        return _Encoded(kept, {i: p for i, p in enc.payloads.items() if i in items})

    def _pad(
        self, sequences: list[list[_Segment]], padding: str | None, limit: int, return_tensors: str | None
    ) -> dict[str, Any]:
        ids = [[t for s in segs for t in s.ids] for segs in sequences]
        types = [[_TYPE_IDS[s.modality] for s in segs for _ in s.ids] for segs in sequences]
        lengths = [len(x) for x in ids]
        target = max(lengths) if padding == "longest" else limit if padding == "max_length" else None
        if return_tensors is not None and len({max(n, target or 0) for n in lengths}) > 1:
            raise ReleaseError(
                f"sequences have lengths {lengths}; {return_tensors} tensors need one length"
                + (f" and max_length is {limit}" if padding == "max_length" else ""),
                key="padding",
                fix="pass padding=True, truncation=True with padding='max_length', or return_tensors=None",
            )
        mask = [[1] * n for n in lengths]
        if target is not None:
            for seq_ids, seq_types, seq_mask in zip(ids, types, mask, strict=True):
                extra = max(0, target - len(seq_ids))
                pad_ids, zeros = [self.token_map.pad] * extra, [0] * extra
                if self.vla.padding_side == "left":
                    seq_ids[:0], seq_types[:0], seq_mask[:0] = pad_ids, zeros, zeros
                else:
                    seq_ids += pad_ids
                    seq_types += zeros
                    seq_mask += zeros
        return {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": types}

    def _collate(self, payloads: list[dict[int, tuple[str, Any]]]) -> dict[str, Any]:
        by_kind: dict[str, list[Any]] = {"image": [], "video": [], "audio": []}
        for seq in payloads:
            for i in sorted(seq):
                kind, payload = seq[i]
                by_kind[kind].append(payload)
        data: dict[str, Any] = {}
        if by_kind["image"]:
            data["pixel_values"] = np.stack([p["pixels"] for p in by_kind["image"]])
            if self._vq():
                data["image_codes"] = np.stack([p["codes"] for p in by_kind["image"]])
        if by_kind["video"]:
            data.update(self.video_processor.collate(by_kind["video"], return_codes=self._vq()))
        if by_kind["audio"]:
            data.update(self.feature_extractor.collate(by_kind["audio"], return_codes=True))
        return data

    # ---- counts, decoding, records --------------------------------------------------------------

    def _grid_tokens(self) -> int:
        rows, cols = self.image_processor.pixels.grid
        return rows * (cols + 1) if self._vq() else rows * cols

    def _get_num_multimodal_tokens(
        self,
        image_sizes: Sequence[Any] | None = None,
        video_sizes: Sequence[tuple[int, float]] | None = None,
        audio_lengths: Sequence[tuple[int, int]] | None = None,
        **kwargs: Any,
    ) -> MultiModalData:
        """Tokens each item will take, delimiters included, computed from sizes alone.

        Args:
            image_sizes: ``(height, width)`` per image (the count does not depend on it).
            video_sizes: ``(num_frames, fps)`` per video.
            audio_lengths: ``(num_samples, sampling_rate)`` per clip.
        """
        data: dict[str, Any] = {}
        if image_sizes is not None:
            data["num_image_tokens"] = [2 + self._grid_tokens() for _ in image_sizes]
            data["num_image_patches"] = [1 for _ in image_sizes]
        if video_sizes is not None:
            plans = [plan_video(n, fps, self.video_processor.video) for n, fps in video_sizes]
            data["num_video_tokens"] = [2 + p.groups * (2 + self._grid_tokens()) for p in plans]
        if audio_lengths is not None:
            n_q = self.feature_extractor.audio.n_q
            data["num_audio_tokens"] = [2 + n_q * self.feature_extractor.num_codes(n, sr) for n, sr in audio_lengths]
        return MultiModalData(**data)

    def describe_token(self, token_id: int) -> str:
        """The token string of ``token_id`` (for messages)."""
        return str(self.tokenizer.convert_ids_to_tokens(int(token_id)))

    def decode_actions(self, token_ids: Any, *, unnorm_key: str | None = None) -> np.ndarray:
        """Continuous actions ``[T, D]`` in dataset units from one action block's token ids.

        Args:
            token_ids: Ids of action bins, with or without ``<|action_start|>``/``<|action_end|>``.
            unnorm_key: The ``norm_stats`` dataset key; required when there are several.

        Raises:
            ActionDecodeError: a malformed sequence (never decoded to zeros) or a missing/unknown key.

        Example:
            >>> ids = processor([ActionVector([0.2, 1.5, 1.0], key="nuplan")])["input_ids"][0, 1:]  # doctest: +SKIP
            >>> processor.decode_actions(ids, unnorm_key="nuplan")  # doctest: +SKIP
        """
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        roles = self.token_map.roles
        return decode_action_tokens(
            np.asarray(token_ids).reshape(-1).tolist(),
            self.vla.actions,
            offset=self.token_map.ranges["action_bin"][0],
            start=roles["action_start"],
            end=roles["action_end"],
            unnorm_key=unnorm_key,
            describe=self.describe_token,
        )

    def image_codes_from_tokens(self, token_ids: Any) -> np.ndarray:
        """VQ codes ``[rows, cols]`` from one image block's ids (``<|image_start|>`` ... ``<|image_end|>``).

        Raises:
            ItemError: the block is not one well-formed image of the config's grid.
        """
        ids = np.asarray(token_ids.tolist() if isinstance(token_ids, torch.Tensor) else token_ids).reshape(-1)
        expected = [*self._grid_ids(np.zeros(self.image_processor.pixels.grid, dtype=np.int64))]
        roles = self.token_map.roles
        offset, count = self.token_map.ranges["visual_code"]
        if len(ids) != len(expected) + 2 or ids[0] != roles["image_start"] or ids[-1] != roles["image_end"]:
            raise ItemError(
                f"an image block of this config has {len(expected) + 2} tokens from image_start to image_end, "
                f"found {len(ids)} ({self.describe_token(ids[0]) if len(ids) else 'empty'} first)",
                fix="pass exactly one image block",
            )
        body = ids[1:-1]
        codes = []
        for pos, (t, shape) in enumerate(zip(body, expected, strict=True), start=1):
            is_sep = shape == roles["row_sep"]
            if is_sep and t != roles["row_sep"] or not is_sep and not offset <= t < offset + count:
                want = "the row separator" if is_sep else f"a visual code (ids {offset}..{offset + count - 1})"
                raise ItemError(f"position {pos}: {self.describe_token(t)} where {want} belongs", fix="regenerate")
            if not is_sep:
                codes.append(t - offset)
        return np.asarray(codes, dtype=np.int64).reshape(self.image_processor.pixels.grid)

    def decode_image(self, codes: Any) -> Image.Image:
        """The (lossy) image of VQ codes ``[rows, cols]``: codebook patches, normalisation undone."""
        return self.image_processor.to_image(self.image_processor.decode(codes))

    def preprocessing_record(self) -> dict[str, Any]:
        """What actually ran: backends, filters, library versions (for snapshots and bug reports)."""
        image, audio = self.image_processor.pixels, self.feature_extractor.audio
        return {
            "image_backend": self.image_processor.backend,
            "video_backend": self.video_processor.backend,
            "resample": image.filter.name,
            "antialias": image.antialias,
            "fit": image.fit,
            "audio_resampling": audio.resampling,
            "mel_scale": audio.mel_scale,
            "image_token_mode": self.vla.image_token_mode,
            "pillow": PIL.__version__,
            "numpy": np.__version__,
        }

    # ---- files ----------------------------------------------------------------------------------

    def processor_files(self) -> dict[str, bytes]:
        """Every file of the processor but the tokenizer's: configs (new and legacy) and codebooks."""
        image = self.image_processor.to_dict()
        audio = self.feature_extractor.to_dict()
        clash = sorted(set(image) & set(audio) - {"processor_class"})
        if clash:
            raise ProcessorConfigError(
                f"image and audio keys {clash} would collide in {LEGACY_PREPROCESSOR_CONFIG}", key=clash[0]
            )
        legacy = {**image, **audio, "processor_class": type(self).__name__}
        files = {
            PROCESSOR_CONFIG: self.to_json_string().encode(),
            LEGACY_PREPROCESSOR_CONFIG: _dump(legacy),
            LEGACY_VIDEO_CONFIG: _dump({**self.video_processor.to_dict(), "processor_class": type(self).__name__}),
        }
        for book in (self.image_processor.codebook, self.feature_extractor.codebook):
            if book is not None:
                files[book.file] = book.data
        return files

    def save_pretrained(self, save_directory: str | os.PathLike[str], push_to_hub: bool = False, **kwargs: Any) -> Any:
        """``ProcessorMixin.save_pretrained`` (tokenizer, processor_config.json), then the legacy configs
        and the codebooks, byte for byte as loaded.
        """
        if push_to_hub:
            raise ReleaseError(
                "push_to_hub would upload before the codebooks are written",
                key="push_to_hub",
                fix="save_pretrained to a directory, then upload the directory",
            )
        written = list(super().save_pretrained(save_directory, **kwargs))
        for name, data in self.processor_files().items():
            path = Path(save_directory) / name
            path.write_bytes(data)
            if str(path) not in written:
                written.append(str(path))
        return written


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
