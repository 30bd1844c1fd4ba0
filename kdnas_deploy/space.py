"""Search spaces of homogeneous BERT students, loaded from YAML (presets: ``kdnas_deploy/presets/spaces/``).

A space lists choices for the number of layers, hidden size, attention heads and FFN size. Heads must
divide the hidden size: given as a list, combinations where they do not are left out (every hidden size must
keep at least one head count); given as a mapping ``hidden -> [heads]``, every entry must divide.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.config import PRESET_DIR, Presets, build, read_mapping
from kdnas_deploy.errors import SpaceError

SPACE_SCHEMA_VERSION = 1
DIMENSIONS = ("num_layers", "hidden_size", "num_heads", "ffn_size")


@dataclass(frozen=True)
class SpaceChoices:
    """``choices`` of a space file. ``num_heads``: a list (filtered per hidden size) or ``hidden -> [heads]``."""

    num_layers: tuple[int, ...]
    hidden_size: tuple[int, ...]
    num_heads: tuple[int, ...] | dict[int, tuple[int, ...]]
    ffn_size: tuple[int, ...]


@dataclass(frozen=True)
class SpaceFile:
    """The layout of a space file (``configs/spaces/*.yaml``), read by the strict loader."""

    choices: SpaceChoices
    schema_version: int = SPACE_SCHEMA_VERSION
    name: str | None = None
    description: str = ""
    teacher: dict[str, int] | None = None
    min_head_dim: int = 1


def _int_list(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise SpaceError(f"choices.{name} must be a non-empty list of integers")
    out = []
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise SpaceError(f"choices.{name} must hold positive integers, got {v!r}")
        out.append(v)
    if len(set(out)) != len(out):
        raise SpaceError(f"choices.{name} has duplicates: {out}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class SearchSpace:
    """A frozen search space. ``heads`` maps each hidden size to the head counts allowed with it."""

    name: str
    layers: tuple[int, ...]
    hidden: tuple[int, ...]
    heads: tuple[tuple[int, tuple[int, ...]], ...]
    ffn: tuple[int, ...]
    description: str = ""
    teacher: Architecture | None = None
    min_head_dim: int = 1

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> SearchSpace:
        """A space from its mapping (the YAML layout), refusing unknown keys and wrong types (one line)."""
        doc: SpaceFile = build(SpaceFile, data, source, error=SpaceError)
        if doc.schema_version != SPACE_SCHEMA_VERSION:
            raise SpaceError(f"{source}: schema_version {doc.schema_version} is not supported ({SPACE_SCHEMA_VERSION})")
        if doc.min_head_dim < 1:
            raise SpaceError(f"{source}: min_head_dim must be a positive integer")
        c = doc.choices
        layers = _int_list("num_layers", c.num_layers)
        hidden = _int_list("hidden_size", c.hidden_size)
        ffn = _int_list("ffn_size", c.ffn_size)
        teacher = None
        if doc.teacher is not None:
            try:
                teacher = Architecture.from_dict(doc.teacher)
            except Exception as exc:  # ArchitectureError
                raise SpaceError(f"{source}: teacher: {exc}") from None
        return cls(
            name=str(doc.name or Path(source).stem),
            layers=layers,
            hidden=hidden,
            heads=_heads(source, hidden, c.num_heads, doc.min_head_dim),
            ffn=ffn,
            description=doc.description,
            teacher=teacher,
            min_head_dim=doc.min_head_dim,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        return cls.from_dict(read_mapping(path, "space", SpaceError), source=str(path))

    @classmethod
    def load(cls, spec: str | Path) -> SearchSpace:
        """A preset name (``minilm-l6``, ``bert-base``: :data:`PRESETS`) or a YAML path."""
        text = str(spec)
        if text in PRESETS:
            return PRESETS.get(text)
        return cls.from_yaml(text)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SPACE_SCHEMA_VERSION, "name": self.name}
        if self.description:
            out["description"] = self.description
        if self.teacher is not None:
            out["teacher"] = self.teacher.to_dict()
        if self.min_head_dim != 1:
            out["min_head_dim"] = self.min_head_dim
        out["choices"] = {
            "num_layers": list(self.layers),
            "hidden_size": list(self.hidden),
            "num_heads": {h: list(a) for h, a in self.heads},
            "ffn_size": list(self.ffn),
        }
        return out

    @property
    def fingerprint(self) -> str:
        """Hash of the choices (not name/description): tables record it to detect a different space."""
        d = self.to_dict()["choices"]
        d["num_heads"] = {str(k): v for k, v in d["num_heads"].items()}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ members
    def heads_for(self, hidden: int) -> tuple[int, ...]:
        return dict(self.heads).get(hidden, ())

    @cached_property
    def variants(self) -> tuple[tuple[int, int, int], ...]:
        """All layer shapes ``(hidden, heads, ffn)``, sorted."""
        return tuple((h, a, f) for h, hs in self.heads for a in hs for f in self.ffn)

    @cached_property
    def members(self) -> tuple[Architecture, ...]:
        return tuple(Architecture(n, h, a, f) for n in self.layers for (h, a, f) in self.variants)

    def __iter__(self) -> Iterator[Architecture]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.layers) * len(self.variants)

    def __contains__(self, arch: object) -> bool:
        return (
            isinstance(arch, Architecture)
            and arch.num_layers in self.layers
            and arch.variant in self._variant_set
        )

    @cached_property
    def _variant_set(self) -> frozenset[tuple[int, int, int]]:
        return frozenset(self.variants)

    def check(self, arch: Architecture) -> Architecture:
        """Return ``arch`` or raise :class:`SpaceError` naming the dimension that is outside the space."""
        if arch in self:
            return arch
        if arch.num_layers not in self.layers:
            why = f"num_layers={arch.num_layers} not in {list(self.layers)}"
        elif arch.hidden_size not in self.hidden:
            why = f"hidden_size={arch.hidden_size} not in {list(self.hidden)}"
        elif arch.num_heads not in self.heads_for(arch.hidden_size):
            why = f"num_heads={arch.num_heads} not in {list(self.heads_for(arch.hidden_size))} for H={arch.hidden_size}"
        else:
            why = f"ffn_size={arch.ffn_size} not in {list(self.ffn)}"
        raise SpaceError(f"architecture {arch} is outside space {self.name!r}: {why}")

    def sample(self, n: int, rng: np.random.Generator | int | None = None, replace: bool = False) -> list[Architecture]:
        """``n`` members drawn uniformly (without replacement unless ``replace``)."""
        rng = np.random.default_rng(rng)
        size = len(self)
        if not replace and n > size:
            raise SpaceError(f"cannot draw {n} distinct members from space {self.name!r} of {size}")
        idx = rng.choice(size, size=n, replace=replace)
        return [self.members[int(i)] for i in idx]

    # ------------------------------------------------------------------ encodings for controllers
    def choice_lists(self) -> dict[str, tuple[int, ...]]:
        """Per-dimension choices, heads as the union over hidden sizes."""
        all_heads = tuple(sorted({a for _, hs in self.heads for a in hs}))
        return {"num_layers": self.layers, "hidden_size": self.hidden, "num_heads": all_heads, "ffn_size": self.ffn}

    def encode(self, arch: Architecture) -> tuple[int, int, int, int]:
        """Indices of ``arch``'s values in :meth:`choice_lists` (a token sequence for a controller)."""
        lists = self.choice_lists()
        return tuple(lists[d].index(v) for d, v in zip(DIMENSIONS, arch.as_tuple(), strict=True))  # type: ignore[return-value]

    def decode(self, indices: Sequence[int]) -> Architecture:
        lists = self.choice_lists()
        return Architecture(*(lists[d][int(i)] for d, i in zip(DIMENSIONS, indices, strict=True)))


def _heads(
    source: str, hidden: tuple[int, ...], raw: tuple[int, ...] | dict[int, tuple[int, ...]], min_head_dim: int
) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Head counts per hidden size: a mapping is checked (every entry divides), a list is filtered."""
    heads: list[tuple[int, tuple[int, ...]]] = []
    if isinstance(raw, dict):
        if set(raw) != set(hidden):
            raise SpaceError(f"{source}: num_heads mapping keys {sorted(raw)} != hidden sizes {list(hidden)}")
        for h in hidden:
            hs = _int_list(f"num_heads[{h}]", raw[h])
            bad = [a for a in hs if h % a]
            if bad:
                raise SpaceError(f"{source}: heads {bad} do not divide hidden size {h}")
            heads.append((h, hs))
        return tuple(heads)
    all_heads = _int_list("num_heads", raw)
    for h in hidden:
        hs = tuple(a for a in all_heads if h % a == 0 and h // a >= min_head_dim)
        if not hs:
            raise SpaceError(
                f"{source}: no head count in {list(all_heads)} divides hidden size {h} with head size >= {min_head_dim}"
            )
        heads.append((h, hs))
    return tuple(heads)


# The shipped spaces: YAML files inside the package (kdnas_deploy/presets/spaces/NAME.yaml), so that
# ``--space minilm-l6`` works from an installed wheel; configs/spaces/ holds copies to start one's own from.
PRESETS: Presets[SearchSpace] = Presets(
    "space", lambda d: SearchSpace.from_dict(d, source="preset"), folder=PRESET_DIR / "spaces", error=SpaceError
)
