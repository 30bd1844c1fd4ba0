"""Search spaces of homogeneous BERT students, loaded from YAML (``configs/spaces/*.yaml``).

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
from kdnas_deploy.errors import SpaceError

SPACE_SCHEMA_VERSION = 1
DIMENSIONS = ("num_layers", "hidden_size", "num_heads", "ffn_size")
_TOP_KEYS = {"schema_version", "name", "description", "teacher", "choices", "min_head_dim"}


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
        if not isinstance(data, dict):
            raise SpaceError(f"{source}: a space must be a mapping")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise SpaceError(f"{source}: unknown key(s) {', '.join(unknown)} (allowed: {sorted(_TOP_KEYS)})")
        version = data.get("schema_version", SPACE_SCHEMA_VERSION)
        if version != SPACE_SCHEMA_VERSION:
            raise SpaceError(f"{source}: schema_version {version} is not supported ({SPACE_SCHEMA_VERSION})")
        choices = data.get("choices")
        if not isinstance(choices, dict):
            raise SpaceError(f"{source}: 'choices' must be a mapping of {', '.join(DIMENSIONS)}")
        unknown = sorted(set(choices) - set(DIMENSIONS))
        if unknown:
            raise SpaceError(f"{source}: unknown choice(s) {', '.join(map(str, unknown))}")
        missing = [d for d in DIMENSIONS if d not in choices]
        if missing:
            raise SpaceError(f"{source}: choices lack {', '.join(missing)}")
        min_head_dim = data.get("min_head_dim", 1)
        if not isinstance(min_head_dim, int) or min_head_dim < 1:
            raise SpaceError(f"{source}: min_head_dim must be a positive integer")
        layers = _int_list("num_layers", choices["num_layers"])
        hidden = _int_list("hidden_size", choices["hidden_size"])
        ffn = _int_list("ffn_size", choices["ffn_size"])
        raw_heads = choices["num_heads"]
        heads: list[tuple[int, tuple[int, ...]]] = []
        if isinstance(raw_heads, dict):
            keys = {int(k) for k in raw_heads}
            if keys != set(hidden):
                raise SpaceError(f"{source}: num_heads mapping keys {sorted(keys)} != hidden sizes {list(hidden)}")
            for h in hidden:
                hs = _int_list(f"num_heads[{h}]", raw_heads.get(h, raw_heads.get(str(h))))
                bad = [a for a in hs if h % a]
                if bad:
                    raise SpaceError(f"{source}: heads {bad} do not divide hidden size {h}")
                heads.append((h, hs))
        else:
            all_heads = _int_list("num_heads", raw_heads)
            for h in hidden:
                hs = tuple(a for a in all_heads if h % a == 0 and h // a >= min_head_dim)
                if not hs:
                    raise SpaceError(
                        f"{source}: no head count in {list(all_heads)} divides hidden size {h}"
                        f" with head size >= {min_head_dim}"
                    )
                heads.append((h, hs))
        teacher = None
        if data.get("teacher") is not None:
            try:
                teacher = Architecture.from_dict(data["teacher"])
            except Exception as exc:  # ArchitectureError
                raise SpaceError(f"{source}: teacher: {exc}") from None
        name = data.get("name") or Path(source).stem
        return cls(
            name=str(name),
            layers=layers,
            hidden=hidden,
            heads=tuple(heads),
            ffn=ffn,
            description=str(data.get("description", "")),
            teacher=teacher,
            min_head_dim=min_head_dim,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise SpaceError(f"space file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SpaceError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def load(cls, spec: str | Path) -> SearchSpace:
        """A preset name (``minilm-l6``, ``bert-base``) or a YAML path."""
        text = str(spec)
        if text in PRESETS:
            return PRESETS[text]()
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

    def fastest(self) -> Architecture:
        """The member with the fewest FLOPs (a stand-in for 'fastest' before a table exists)."""
        return min(self.members, key=lambda a: a.flops())


def _minilm_l6() -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "name": "minilm-l6",
            "description": "Students of a MiniLM-L6-H384 teacher (all-MiniLM-L6-v2): 1-6 layers, hidden <= 384.",
            "teacher": {"num_layers": 6, "hidden_size": 384, "num_heads": 12, "ffn_size": 1536},
            "choices": {
                "num_layers": [1, 2, 3, 4, 5, 6],
                "hidden_size": [128, 192, 256, 384],
                "num_heads": [4, 6, 12],
                "ffn_size": [384, 768, 1152, 1536],
            },
            "min_head_dim": 16,
        },
        source="minilm-l6",
    )


def _bert_base() -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "name": "bert-base",
            "description": "Students of a BERT-base teacher (12 layers, hidden 768): 1-12 layers, hidden <= 768.",
            "teacher": {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "ffn_size": 3072},
            "choices": {
                "num_layers": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                "hidden_size": [256, 384, 512, 768],
                "num_heads": [4, 8, 12],
                "ffn_size": [512, 1024, 2048, 3072],
            },
            "min_head_dim": 32,
        },
        source="bert-base",
    )


PRESETS = {"minilm-l6": _minilm_l6, "bert-base": _bert_base}
