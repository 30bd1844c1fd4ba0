"""The latency table file and its predictor.

A table is one JSON file (``schema_version`` :data:`TABLE_SCHEMA_VERSION`): the search space, the device
fingerprint, the grid (batch sizes x sequence lengths), the scheme's anchor depths, one entry per
(variant, anchor depth, batch, seq) with median/spread/repetitions, the reference probe measured alongside,
and a calibration (a probe re-anchoring scale, 1.0 until ``--recalibrate``).

:meth:`LatencyTable.predict` is vectorized: it maps architectures to rows of a dense array
``[variant, batch, seq, anchor]`` and interpolates piecewise-linearly in depth and linearly in sequence length.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SpaceError, TableError
from kdnas_deploy.io import atomic_write_json
from kdnas_deploy.latency.scheme import SCHEME_NAME, decompose, interp_seq, piecewise
from kdnas_deploy.space import SearchSpace

TABLE_SCHEMA_VERSION = 1
TABLE_KIND = "kdnas-latency-table"
_REQUIRED = ("space", "device", "precision", "batch_sizes", "seq_lens", "fingerprint", "scheme", "entries", "probe")


class LatencyTable:
    """A measured latency lookup table (see module doc). Construct with :meth:`load` or :meth:`from_dict`."""

    def __init__(self, data: dict[str, Any], source: str = "table") -> None:
        self.data = data
        self.source = source
        try:
            self.space: SearchSpace = SearchSpace.from_dict(data["space"], source=f"{source}: space")
            self.device: str = str(data["device"])
            self.precision: str = str(data["precision"])
            self.batch_sizes: tuple[int, ...] = tuple(int(b) for b in data["batch_sizes"])
            self.seq_lens: tuple[int, ...] = tuple(sorted(int(s) for s in data["seq_lens"]))
            self.fingerprint: dict[str, Any] = dict(data["fingerprint"])
            self.anchors: tuple[int, ...] = tuple(int(d) for d in data["scheme"]["anchor_depths"])
            self._build_array(data["entries"])
        except TableError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TableError(f"{source}: corrupt latency table ({type(exc).__name__}: {exc})") from None
        self._variant_index = {v: i for i, v in enumerate(self.space.variants)}
        self._layers = frozenset(self.space.layers)

    # ------------------------------------------------------------------ construction / IO
    def _build_array(self, entries: list[dict[str, Any]]) -> None:
        variants = self.space.variants
        vi = {v: i for i, v in enumerate(variants)}
        bi = {b: i for i, b in enumerate(self.batch_sizes)}
        si = {s: i for i, s in enumerate(self.seq_lens)}
        ai = {d: i for i, d in enumerate(self.anchors)}
        arr = np.full((len(variants), len(bi), len(si), len(ai)), np.nan)
        for e in entries:
            key = (int(e["hidden_size"]), int(e["num_heads"]), int(e["ffn_size"]))
            idx = (vi.get(key), bi.get(int(e["batch"])), si.get(int(e["seq"])), ai.get(int(e["num_layers"])))
            if None in idx:
                raise TableError(f"{self.source}: entry {key} L={e['num_layers']} b={e['batch']} s={e['seq']} "
                                 "is outside the table's space or grid")  # fmt: skip
            value = float(e["latency_ms"])
            if not np.isfinite(value) or value <= 0:
                raise TableError(f"{self.source}: entry {key} has invalid latency_ms {value!r}")
            arr[idx] = value
        if np.isnan(arr).any():
            missing = int(np.isnan(arr).sum())
            raise TableError(f"{self.source}: incomplete latency table ({missing} of {arr.size} entries missing)")
        self._array = arr

    @classmethod
    def from_dict(cls, data: Any, source: str = "table") -> LatencyTable:
        if not isinstance(data, dict):
            raise TableError(f"{source}: not a latency table (expected a JSON object)")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise TableError(f"{source}: not a latency table (no integer schema_version)")
        if version > TABLE_SCHEMA_VERSION:
            raise TableError(
                f"{source}: table schema_version {version} is newer than this kdnas-deploy supports "
                f"({TABLE_SCHEMA_VERSION}); upgrade kdnas-deploy"
            )
        if version < 1 or data.get("kind") != TABLE_KIND:
            raise TableError(f"{source}: not a {TABLE_KIND} file (schema_version {version}, kind {data.get('kind')!r})")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise TableError(f"{source}: corrupt latency table (missing {', '.join(missing)})")
        return cls(data, source)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise TableError(f"latency table not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TableError(f"{path}: corrupt latency table (not valid JSON: {exc})") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.data)

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> str:
        return str(self.fingerprint.get("backend", "cpu-ort"))

    @property
    def threads(self) -> int | None:
        t = self.fingerprint.get("threads")
        return int(t) if t else None

    @property
    def probe(self) -> dict[str, Any]:
        return self.data["probe"]

    @property
    def probe_ms(self) -> float:
        return float(self.data["probe"]["latency_ms"])

    @property
    def calibration(self) -> dict[str, Any]:
        return self.data.get("calibration") or {"scale": 1.0}

    @property
    def scale(self) -> float:
        return float(self.calibration.get("scale", 1.0))

    def set_calibration(self, probe_now: dict[str, Any] | float, info: dict[str, Any] | None = None) -> float:
        """Re-anchor to the machine's present speed from probes measured now (a probe summary with
        ``latency_ms`` and optionally ``large.latency_ms``, or the small probe's ms). Returns the small
        probe's scale (now / at build)."""
        if not isinstance(probe_now, dict):
            probe_now = {"latency_ms": float(probe_now)}
        scale = float(probe_now["latency_ms"]) / self.probe_ms
        lite = {"latency_ms": round(float(probe_now["latency_ms"]), 5)}
        if "large" in probe_now:
            lite["large"] = {"latency_ms": round(float(probe_now["large"]["latency_ms"]), 5)}
        cal = {"scale": round(scale, 5), "probe_ms": lite["latency_ms"], "probe": lite, **(info or {})}
        if "large" in lite and "large" in self.probe:
            cal["scale_large"] = round(lite["large"]["latency_ms"] / float(self.probe["large"]["latency_ms"]), 5)
        history = list(self.calibration.get("history", []))
        prev = {k: v for k, v in self.calibration.items() if k != "history"}
        if prev.get("probe_ms") is not None:
            history.append(prev)
        cal["history"] = history[-20:]
        self.data["calibration"] = cal
        return scale

    def calibration_factors(self, raw_ms: np.ndarray) -> np.ndarray:
        """Per-prediction re-anchoring factors of the stored calibration (ones when never calibrated)."""
        from kdnas_deploy.latency.anchor import anchor_scales

        cal = self.calibration
        if isinstance(cal.get("probe"), dict):
            return anchor_scales(raw_ms, self.probe, cal["probe"])
        return np.full(np.shape(raw_ms), float(cal.get("scale", 1.0)))

    # ------------------------------------------------------------------ prediction
    def resolve_grid(self, batch: int | None, seq: int | None) -> tuple[int, int]:
        b = self.batch_sizes[0] if batch is None else int(batch)
        s = self.seq_lens[0] if seq is None else int(seq)
        if b not in self.batch_sizes:
            raise TableError(f"batch {b} is not in the table's batch sizes {list(self.batch_sizes)}")
        if not self.seq_lens[0] <= s <= self.seq_lens[-1]:
            raise TableError(f"seq {s} is outside the table's sequence lengths {list(self.seq_lens)}")
        return b, s

    def indices(self, archs: Sequence[Architecture]) -> tuple[np.ndarray, np.ndarray]:
        """Variant row and depth of each architecture (SpaceError for one outside the space)."""
        vidx = self._variant_index
        layers = self._layers
        rows = np.empty(len(archs), dtype=np.intp)
        depths = np.empty(len(archs), dtype=float)
        for i, a in enumerate(archs):
            r = vidx.get((a.hidden_size, a.num_heads, a.ffn_size))
            if r is None or a.num_layers not in layers:
                self.space.check(a)
                raise SpaceError(f"architecture {a} is outside space {self.space.name!r}")  # pragma: no cover
            rows[i] = r
            depths[i] = a.num_layers
        return rows, depths

    def predict_indices(
        self, rows: np.ndarray, depths: np.ndarray, batch: int | None = None, seq: int | None = None,
        calibrated: bool = True,
    ) -> np.ndarray:  # fmt: skip
        """Predictions (ms) from variant rows and depths: the fully vectorized core."""
        b, s = self.resolve_grid(batch, seq)
        sub = self._array[rows, self.batch_sizes.index(b)]  # (N, S, A)
        per_seq = np.stack([piecewise(depths, self.anchors, sub[:, j, :]) for j in range(sub.shape[1])], axis=1)
        pred = interp_seq(per_seq, self.seq_lens, s)
        return pred * self.calibration_factors(pred) if calibrated else pred

    def predict(
        self,
        archs: Architecture | Sequence[Architecture],
        batch: int | None = None,
        seq: int | None = None,
        calibrated: bool = True,
    ) -> np.ndarray:
        """Predicted latency in ms, shape ``(N,)`` (``(1,)`` for a single architecture).

        ``batch`` must be a grid batch size; ``seq`` may lie between grid sequence lengths (interpolated).
        Defaults: the first grid point. ``calibrated`` applies the table's probe re-anchoring (if any).
        """
        if isinstance(archs, Architecture):
            archs = [archs]
        rows, depths = self.indices(archs)
        return self.predict_indices(rows, depths, batch, seq, calibrated)

    def predict_one(self, arch: Architecture, batch: int | None = None, seq: int | None = None) -> float:
        return float(self.predict([arch], batch, seq)[0])

    # ------------------------------------------------------------------ machine check / summary
    def check_machine(self, strict: bool = False) -> list[str]:
        """Differences between the table's fingerprint and this machine; ``strict`` raises TableError."""
        from kdnas_deploy.latency.fingerprint import compare, machine_fingerprint

        issues = compare(self.fingerprint, machine_fingerprint(self.device, self.backend))
        if strict and issues:
            raise TableError(f"table {self.source} was measured on a different machine: " + "; ".join(issues))
        return issues

    def decomposition(self) -> list[dict[str, Any]]:
        """Fixed and per-layer costs of each variant at each grid point."""
        out = []
        for vi, (h, a, f) in enumerate(self.space.variants):
            for bi, b in enumerate(self.batch_sizes):
                for si, s in enumerate(self.seq_lens):
                    vals = self._array[vi, bi, si]
                    out.append({"hidden_size": h, "num_heads": a, "ffn_size": f, "batch": b, "seq": s,
                                **decompose(self.anchors, vals)})  # fmt: skip
        return out

    def summary(self) -> dict[str, Any]:
        fp = self.fingerprint
        return {
            "space": self.space.name,
            "members": len(self.space),
            "variants": len(self.space.variants),
            "device": self.device,
            "backend": self.backend,
            "precision": self.precision,
            "threads": self.threads,
            "batch_sizes": list(self.batch_sizes),
            "seq_lens": list(self.seq_lens),
            "scheme": self.data["scheme"].get("name", SCHEME_NAME),
            "anchor_depths": list(self.anchors),
            "entries": len(self.data["entries"]),
            "probe_ms": self.probe_ms,
            "large_probe_ms": self.probe.get("large", {}).get("latency_ms"),
            "calibration_scale": self.scale,
            "calibration_scale_large": self.calibration.get("scale_large"),
            "device_name": fp.get("gpu_name") or fp.get("cpu_model"),
            "onnxruntime_version": fp.get("onnxruntime_version"),
            "created_at": self.data.get("created_at"),
            "build_seconds": self.data.get("measurement", {}).get("build_seconds"),
            "derived_from": (self.data.get("derived_from") or {}).get("table"),
            "transfer_correction": (self.data.get("transfer") or {}).get("model"),
        }


def load_table(path: str | Path) -> LatencyTable:
    """The latency table at ``path`` (TableError, one line, when it is missing or not a table)."""
    return LatencyTable.load(path)


def check_threads(table: Any, threads: int, what: str = "--threads") -> None:
    """Refuse to compare a table's predictions with a measurement at another thread count (TableError).
    Tables that do not record their threads (and table-like objects without ``threads``) pass."""
    have = getattr(table, "threads", None)
    if have is not None and int(threads) != int(have):
        source = getattr(table, "source", "the latency table")
        raise TableError(f"table {source} was measured with {have} threads, {what} is {threads}: "
                         f"pass {what} {have} (or a table built with {threads} threads)")
