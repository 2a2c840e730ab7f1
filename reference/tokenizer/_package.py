"""The tokenizer package as written: each file parsed on its own, with what it says about tokens.

Reading never raises. An absent file is absent; a file that cannot be parsed is kept as a
:class:`~vla_reference.errors.ReleaseError` in ``errors`` and says nothing. Every readable file
is reduced to claims of three kinds, so that the checks compare files without knowing formats:

- a written token: ``<|image|>`` has ID 320 (with its flags where the file records them),
- a role: the eos token is ``<|end_of_text|>`` (tokenizer side) or has ID 1 (model side),
- a special-token list entry: ``<|image|>`` is declared special.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from tokenizers import Tokenizer

from .._fs import read_json
from ..errors import MalformedFileError, ReleaseError
from ._build import PACKAGE_FILES, SpecialTokens

__all__ = [
    "probe_tokenizer",
    "ROLES",
    "FLAGS",
    "MODEL_CONFIGS",
    "TokenFlags",
    "WrittenToken",
    "RoleClaim",
    "SpecialClaim",
    "FileClaims",
    "TokenizerPackage",
    "read_tokenizer_package",
]

ROLES: Final[tuple[str, ...]] = tuple(f.name for f in fields(SpecialTokens))
# the flags tokenizers keeps per added token, in tokenizer.json's order
FLAGS: Final[tuple[str, ...]] = ("special", "single_word", "lstrip", "rstrip", "normalized")
# model-side files that state role IDs (bos_token_id, eos_token_id, pad_token_id)
MODEL_CONFIGS: Final[tuple[str, ...]] = ("config.json", "generation_config.json")


@dataclass(frozen=True)
class TokenFlags:
    """How tokenizers matches an added token (defaults as tokenizers fills them in)."""

    special: bool = False
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = True

    def changes(self, before: TokenFlags) -> list[tuple[str, bool, bool]]:
        """``(flag, now, before)`` for every flag that differs from ``before``."""
        return [(f, getattr(self, f), getattr(before, f)) for f in FLAGS if getattr(self, f) != getattr(before, f)]


@dataclass(frozen=True)
class WrittenToken:
    """A file says ``content`` has ID ``id``, at ``key`` of that file."""

    content: str
    id: int
    key: str
    flags: TokenFlags | None = None


@dataclass(frozen=True)
class RoleClaim:
    """A file names the token (tokenizer side) or the IDs (model side) of a role."""

    role: str
    key: str
    token: str | None = None
    ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class SpecialClaim:
    """A file lists ``token`` as a special token, at ``key``."""

    token: str
    key: str


@dataclass(frozen=True)
class FileClaims:
    tokens: tuple[WrittenToken, ...] = ()
    roles: tuple[RoleClaim, ...] = ()
    specials: tuple[SpecialClaim, ...] = ()


@dataclass(frozen=True)
class _TokenizerJson:
    model_type: str
    vocab: dict[str, int]
    merges: tuple[tuple[str, str], ...] | None
    added: tuple[WrittenToken, ...]


def _fail(path: Path, key: str, what: str) -> MalformedFileError:
    return MalformedFileError(what, path=path, key=key, fix="regenerate the tokenizer package")


def _object(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, key, f"expected a JSON object, found {type(value).__name__}")
    return value


def _int(value: Any, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, key, f"expected an integer ID, found {value!r}")
    return value


def _token_name(value: Any, path: Path, key: str) -> str | None:
    """A token as transformers writes it: a string, or an AddedToken object with ``content``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    raise _fail(path, key, f"expected a token string, found {value!r}")


def _flags(obj: Mapping[str, Any], path: Path, key: str) -> TokenFlags:
    values: dict[str, bool] = {}
    for name in FLAGS:
        if name in obj:
            if not isinstance(obj[name], bool):
                raise _fail(path, f"{key}.{name}", f"expected true or false, found {obj[name]!r}")
            values[name] = obj[name]
    values.setdefault("normalized", not values.get("special", False))
    return TokenFlags(**values)


def _read_json(path: Path) -> Any:
    """``read_json`` (bounded: size, nesting, long numbers), with the package's fix."""
    try:
        return read_json(path)
    except MalformedFileError as e:
        raise MalformedFileError(e.detail, path=path, fix="regenerate the tokenizer package") from e


def _parse_tokenizer_json(path: Path) -> tuple[_TokenizerJson, FileClaims]:
    data = _object(_read_json(path), path, "")
    model = _object(data.get("model"), path, "model")
    model_type = str(model.get("type") or "")
    raw_vocab = model.get("vocab")
    if isinstance(raw_vocab, dict):
        vocab = {str(t): _int(i, path, f"model.vocab.{t}") for t, i in raw_vocab.items()}
    elif isinstance(raw_vocab, list):  # Unigram: [[piece, score], ...], the ID is the position
        vocab = {str(entry[0]): i for i, entry in enumerate(raw_vocab)}
    else:
        raise _fail(path, "model.vocab", "no vocabulary")
    merges = None
    if model_type == "BPE":
        pairs = []
        for i, m in enumerate(model.get("merges") or []):
            pair = m.split(" ") if isinstance(m, str) else m
            if not isinstance(pair, list) or len(pair) != 2:
                raise _fail(path, f"model.merges[{i}]", f"expected a pair, found {m!r}")
            pairs.append((str(pair[0]), str(pair[1])))
        merges = tuple(pairs)
    raw_added = data.get("added_tokens") or []
    if not isinstance(raw_added, list):
        raise _fail(path, "added_tokens", "expected a list")
    added = []
    for i, entry in enumerate(raw_added):
        key = f"added_tokens[{i}]"
        entry = _object(entry, path, key)
        content = entry.get("content")
        if not isinstance(content, str):
            raise _fail(path, f"{key}.content", f"expected a token string, found {content!r}")
        added.append(WrittenToken(content, _int(entry.get("id"), path, f"{key}.id"), key, _flags(entry, path, key)))
    claims = tuple(WrittenToken(t, i, "model.vocab") for t, i in vocab.items()) + tuple(added)
    return _TokenizerJson(model_type, vocab, merges, tuple(added)), FileClaims(tokens=claims)


def _parse_vocab(path: Path) -> dict[str, int]:
    data = _object(_read_json(path), path, "")
    return {str(t): _int(i, path, str(t)) for t, i in data.items()}


def _parse_merges(path: Path) -> tuple[tuple[tuple[str, str], ...], tuple[int, ...]]:
    """The merges in rank order, and the line number of each."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MalformedFileError(f"cannot read: {e}", path=path, fix="regenerate the tokenizer package") from e
    pairs, numbers = [], []
    for n, line in enumerate(lines, 1):
        if (n == 1 and line.startswith("#version")) or not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise _fail(path, f"line {n}", f"expected 'left right', found {line!r}")
        pairs.append((parts[0], parts[1]))
        numbers.append(n)
    return tuple(pairs), tuple(numbers)


def _special_list(value: Any, path: Path, key: str) -> list[SpecialClaim]:
    if value is None:
        return []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        raise _fail(path, key, f"expected a list of tokens, found {value!r}")
    out = []
    for k, v in items:
        name = _token_name(v, path, f"{key}[{k}]")
        if name is not None:
            out.append(SpecialClaim(name, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}"))
    return out


def _roles(data: Mapping[str, Any], path: Path) -> tuple[RoleClaim, ...]:
    roles = []
    for role in ROLES:
        token = _token_name(data.get(f"{role}_token"), path, f"{role}_token")
        if token is not None:
            roles.append(RoleClaim(role, f"{role}_token", token=token))
    return tuple(roles)


def _parse_special_map(path: Path) -> FileClaims:
    data = _object(_read_json(path), path, "")
    specials = _special_list(data.get("additional_special_tokens"), path, "additional_special_tokens")
    return FileClaims(roles=_roles(data, path), specials=tuple(specials))


def _parse_added_tokens(path: Path) -> FileClaims:
    data = _object(_read_json(path), path, "")
    return FileClaims(tokens=tuple(WrittenToken(str(t), _int(i, path, str(t)), str(t)) for t, i in data.items()))


def _parse_tokenizer_config(path: Path) -> FileClaims:
    data = _object(_read_json(path), path, "")
    # transformers 5 renamed additional_special_tokens to extra_special_tokens; either may be there
    specials = [
        *_special_list(data.get("extra_special_tokens"), path, "extra_special_tokens"),
        *_special_list(data.get("additional_special_tokens"), path, "additional_special_tokens"),
    ]
    tokens = []
    for k, entry in _object(data.get("added_tokens_decoder") or {}, path, "added_tokens_decoder").items():
        key = f"added_tokens_decoder.{k}"
        try:
            token_id = int(k)
        except ValueError:
            raise _fail(path, key, f"expected an integer ID as key, found {k!r}") from None
        entry = _object(entry, path, key)
        content = _token_name(entry, path, key)
        if content is None:
            raise _fail(path, f"{key}.content", "no content")
        tokens.append(WrittenToken(content, token_id, key, _flags(entry, path, key)))
    return FileClaims(tokens=tuple(tokens), roles=_roles(data, path), specials=tuple(specials))


def _parse_model_config(path: Path) -> FileClaims:
    data = _object(_read_json(path), path, "")
    nested: dict[str, Any] = data["text_config"] if isinstance(data.get("text_config"), dict) else {}
    roles = []
    for role in ROLES:
        name = f"{role}_token_id"
        key, value = (name, data[name]) if data.get(name) is not None else (f"text_config.{name}", nested.get(name))
        if value is None:
            continue
        ids = value if isinstance(value, list) else [value]
        roles.append(RoleClaim(role, key, ids=tuple(_int(i, path, key) for i in ids)))
    return FileClaims(roles=tuple(roles))


_PARSERS: Final[dict[str, Callable[[Path], FileClaims]]] = {
    "special_tokens_map.json": _parse_special_map,
    "added_tokens.json": _parse_added_tokens,
    "tokenizer_config.json": _parse_tokenizer_config,
    **{name: _parse_model_config for name in MODEL_CONFIGS},
}


@dataclass(frozen=True)
class TokenizerPackage:
    """What the tokenizer package (and the model configs beside it) say, file by file.

    Example:
        >>> pkg = read_tokenizer_package(Path("golden/dense/model"))  # doctest: +SKIP
        >>> pkg.ids_of("<|image|>")                                  # doctest: +SKIP
        {320}
    """

    model_dir: Path
    present: frozenset[str]
    errors: Mapping[str, ReleaseError]
    claims: Mapping[str, FileClaims]
    model_type: str | None = None
    vocab: Mapping[str, int] = field(default_factory=dict)
    merges: tuple[tuple[str, str], ...] | None = None
    added: tuple[WrittenToken, ...] = ()
    vocab_file: Mapping[str, int] | None = None
    merges_file: tuple[tuple[str, str], ...] | None = None
    merges_file_lines: tuple[int, ...] = ()

    def path(self, name: str) -> Path:
        return self.model_dir / name

    def readable(self, name: str) -> bool:
        """The file is there and parsed."""
        return name in self.present and name not in self.errors

    @property
    def is_bpe(self) -> bool:
        return self.model_type == "BPE"

    @cached_property
    def _ids(self) -> dict[str, set[int]]:
        out: dict[str, set[int]] = defaultdict(set)
        for t in self.claims.get("tokenizer.json", FileClaims()).tokens:
            out[t.content].add(t.id)
        return dict(out)

    @cached_property
    def owners(self) -> dict[int, set[str]]:
        """ID -> every token tokenizer.json gives that ID (vocabulary and added tokens)."""
        out: dict[int, set[str]] = defaultdict(set)
        for token, ids in self._ids.items():
            for i in ids:
                out[i].add(token)
        return dict(out)

    def ids_of(self, token: str) -> set[int]:
        """Every ID tokenizer.json gives ``token`` (empty if it does not define it)."""
        return self._ids.get(token, set())

    def id_of(self, token: str) -> int | None:
        """The ID of ``token`` in tokenizer.json if it has exactly one and shares it with no other token."""
        ids = self.ids_of(token)
        if len(ids) != 1:
            return None
        (i,) = ids
        return i if len(self.owners[i]) == 1 else None

    def ambiguous(self, token: str) -> bool:
        """tokenizer.json gives ``token`` several IDs, or gives its ID to another token too."""
        return bool(self.ids_of(token)) and self.id_of(token) is None

    @property
    def base_size(self) -> int:
        """Size of the model's own vocabulary (added tokens not counted)."""
        return len(self.vocab)

    @property
    def max_id(self) -> int | None:
        return max(self.owners) if self.owners else None

    def declared_specials(self) -> list[tuple[str, str, str]]:
        """``(token, file, key)`` for every token some file declares special, first declaration first."""
        out: dict[str, tuple[str, str, str]] = {}
        for t in self.added:
            if t.flags is not None and t.flags.special:
                out.setdefault(t.content, (t.content, "tokenizer.json", t.key))
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            claims = self.claims.get(name, FileClaims())
            for r in claims.roles:
                if r.token is not None:
                    out.setdefault(r.token, (r.token, name, r.key))
            for s in claims.specials:
                out.setdefault(s.token, (s.token, name, s.key))
        return list(out.values())

    def load(self) -> Tokenizer:
        """tokenizer.json loaded by tokenizers, as a runtime sees it.

        Raises:
            MalformedFileError: tokenizers cannot load the file.
        """
        path = self.path("tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - the Rust side raises plain Exception
            raise MalformedFileError(
                f"tokenizers cannot load it: {e}", path=path, fix="regenerate the tokenizer package"
            ) from e
        probe_tokenizer(tokenizer, path)
        return tokenizer


_NOT_CRASHES = (KeyboardInterrupt, SystemExit, GeneratorExit)


def probe_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    """Encode and decode what every check will (plain text, each added token, a pair, with and
    without the template), so that a file that makes tokenizers panic is refused once, naming it.

    A Rust panic reaches Python as ``pyo3_runtime.PanicException``, a ``BaseException`` that
    ``except Exception`` does not catch: without this, it ends a check as a bare traceback.

    Raises:
        MalformedFileError: encoding or decoding with this tokenizer.json crashes.
    """
    added = [t.content for t in tokenizer.get_added_tokens_decoder().values()]
    texts = ["", "hello world", " ".join(added), "".join(added)]
    try:
        for text in texts:
            for special in (True, False):
                ids = tokenizer.encode(text, add_special_tokens=special).ids
                tokenizer.decode(ids, skip_special_tokens=not special)
        tokenizer.encode("hello", "world", add_special_tokens=True)
    except _NOT_CRASHES:
        raise
    except BaseException as e:  # noqa: BLE001 - a panic is a BaseException
        raise MalformedFileError(
            f"tokenizers crashes on it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            path=path,
            fix="regenerate the tokenizer package (vla_reference.tokenizer.write_tokenizer_package)",
        ) from None


def _files(model_dir: Path) -> Iterable[str]:
    yield from (f.name for f in PACKAGE_FILES)
    yield from MODEL_CONFIGS


def read_tokenizer_package(model_dir: Path) -> TokenizerPackage:
    """Parse the tokenizer package in ``model_dir`` and the role IDs of the model configs beside it.

    Example:
        >>> pkg = read_tokenizer_package(Path("golden/dense/model"))  # doctest: +SKIP
        >>> sorted(pkg.present)[:2], dict(pkg.errors)                  # doctest: +SKIP
        (['added_tokens.json', 'config.json'], {})
    """
    model_dir = Path(model_dir)
    present = frozenset(name for name in _files(model_dir) if (model_dir / name).is_file())
    errors: dict[str, ReleaseError] = {}
    claims: dict[str, FileClaims] = {}
    extra: dict[str, Any] = {}
    for name in sorted(present):
        path = model_dir / name
        try:
            if name == "tokenizer.json":
                tj, claims[name] = _parse_tokenizer_json(path)
                extra.update(model_type=tj.model_type, vocab=tj.vocab, merges=tj.merges, added=tj.added)
            elif name == "vocab.json":
                extra["vocab_file"] = _parse_vocab(path)
            elif name == "merges.txt":
                extra["merges_file"], extra["merges_file_lines"] = _parse_merges(path)
            else:
                claims[name] = _PARSERS[name](path)
        except ReleaseError as e:
            errors[name] = e
    return TokenizerPackage(model_dir, present, errors, claims, **extra)
