"""Read one section of processor_config.json: typed values, every problem collected and raised
together, unknown keys named."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .errors import ProcessorConfigError

PROCESSOR_CONFIG: Final = "processor_config.json"
LEGACY_PREPROCESSOR_CONFIG: Final = "preprocessor_config.json"  # transformers 4 readers: image + audio keys
LEGACY_VIDEO_CONFIG: Final = "video_preprocessor_config.json"  # transformers 4.5x readers: video keys


IGNORED_KEYS: Final = ("image_processor_type", "video_processor_type", "feature_extractor_type", "processor_class")

MISSING_VALUE: Final = object()


class SectionReader:
    """Reads one config section, collecting every problem before raising them together."""

    def __init__(self, data: Mapping[str, Any], section: str) -> None:
        self.data = data
        self.section = section
        self.problems: list[tuple[str, str]] = []
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> None:
        self.problems.append((key, message))

    def raw(self, key: str) -> Any:
        self.seen.add(key.split(".")[0])
        value: Any = self.data
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                self.fail(key, "is missing")
                return MISSING_VALUE
            value = value[part]
        return value

    def flag(self, key: str) -> bool:
        v = self.raw(key)
        if v is MISSING_VALUE:
            return False
        if not isinstance(v, bool):
            self.fail(key, f"must be true or false, found {v!r}")
            return False
        return v

    def integer(self, key: str, *, low: int | None = None) -> int:
        v = self.raw(key)
        return 0 if v is MISSING_VALUE else self._int(key, v, low)

    def _int(self, key: str, v: Any, low: int | None) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, f"must be an integer, found {v!r}")
            return 0
        if low is not None and v < low:
            self.fail(key, f"must be >= {low}, found {v}")
        return v

    def number(self, key: str, *, positive: bool = False) -> float:
        v = self.raw(key)
        return 0.0 if v is MISSING_VALUE else self._float(key, v, positive)

    def _float(self, key: str, v: Any, positive: bool) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(key, f"must be a finite number, found {v!r}")
            return 0.0
        if positive and v <= 0:
            self.fail(key, f"must be > 0, found {v!r}")
        return float(v)

    def choice(self, key: str, choices: Sequence[Any]) -> Any:
        v = self.raw(key)
        if v is MISSING_VALUE:
            return choices[0]
        if v not in choices:
            self.fail(key, f"must be one of {list(choices)}, found {v!r}")
            return choices[0]
        return v

    def text(self, key: str, *, optional: bool = False) -> str | None:
        v = self.raw(key)
        if v is MISSING_VALUE or (optional and v is None):
            return None
        if not isinstance(v, str) or not v:
            self.fail(key, f"must be a non-empty string{' or null' if optional else ''}, found {v!r}")
            return None
        return v

    def floats(self, key: str, *, n: int | None = None, positive: bool = False) -> tuple[float, ...]:
        v = self.raw(key)
        if v is MISSING_VALUE:
            return ()
        return self.float_list(key, v, n=n, positive=positive)

    def float_list(self, key: str, v: Any, *, n: int | None = None, positive: bool = False) -> tuple[float, ...]:
        if not isinstance(v, (list, tuple)) or (n is not None and len(v) != n) or not v:
            self.fail(key, f"must be a list of {n or 'one or more'} numbers, found {v!r}")
            return ()
        return tuple(self._float(f"{key}[{i}]", x, positive) for i, x in enumerate(v))

    def ints(self, key: str, *, n: int, low: int, high: int) -> tuple[int, ...]:
        v = self.raw(key)
        if v is MISSING_VALUE:
            return ()
        if not isinstance(v, (list, tuple)) or len(v) != n:
            self.fail(key, f"must be a list of {n} integers, found {v!r}")
            return ()
        out = tuple(self._int(f"{key}[{i}]", x, low) for i, x in enumerate(v))
        for i, x in enumerate(out):
            if x > high:
                self.fail(f"{key}[{i}]", f"must be <= {high}, found {x}")
        return out

    def file(self, key: str, *, optional: bool = False) -> str | None:
        """A file name beside the config: relative, no ``..``, forward slashes."""
        v = self.text(key, optional=optional)
        if v is not None and (v.startswith("/") or "\\" in v or ".." in v.split("/")):
            self.fail(key, f"must be a relative file name inside the model directory, found {v!r}")
            return None
        return v

    def strs(self, key: str) -> tuple[str, ...]:
        v = self.raw(key)
        if v is MISSING_VALUE:
            return ()
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x for x in v):
            self.fail(key, f"must be a list of non-empty strings, found {v!r}")
            return ()
        if len(set(v)) != len(v):
            dupes = sorted({x for x in v if v.count(x) > 1})
            self.fail(key, f"must not repeat entries, found {dupes} more than once")
        return tuple(v)

    def str_map(self, key: str, roles: Sequence[str]) -> dict[str, str]:
        v = self.raw(key)
        if v is MISSING_VALUE:
            return {}
        if not isinstance(v, Mapping):
            self.fail(key, f"must be an object, found {v!r}")
            return {}
        out = {}
        for role in roles:
            s = v.get(role)
            if not isinstance(s, str) or not s:
                self.fail(f"{key}.{role}", f"must be a non-empty string, found {s!r}")
            else:
                out[role] = s
        for extra in sorted(set(v) - set(roles)):
            self.fail(f"{key}.{extra}", f"is not a known role; expected only {list(roles)}")
        return out

    def done(self, *, strict: bool = True) -> None:
        if strict:
            for key in sorted(set(self.data) - self.seen - set(IGNORED_KEYS)):
                self.fail(key, "is not a known key (misspelled?)")
        if not self.problems:
            return
        lines = "; ".join(f"{self.section}.{k} {m}" for k, m in self.problems)
        key = f"{self.section}.{self.problems[0][0]}" if len(self.problems) == 1 else self.section
        raise ProcessorConfigError(
            f"{len(self.problems)} problem(s) in {PROCESSOR_CONFIG} {self.section}: {lines}",
            key=key,
            fix="correct these keys to the values the model was trained with (docs/processor.md lists every key)",
        )
