"""Execution providers, device checks and session/model loading shared by ``export`` and ``bench``.

``--device cuda`` needs ``onnxruntime-gpu`` (the ``gpu`` extra) exposing ``CUDAExecutionProvider``; without it
:func:`require_device` raises :class:`~kdnas_deploy.errors.DeviceError` (exit code 2) before any work starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import DeviceError, ModelError

# device -> ONNX Runtime providers, in priority order (CPU kept as the fallback for unsupported nodes)
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
}
ONNX_FILE = "model.onnx"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(device: str, available: list[str] | None = None) -> list[str]:
    """The provider list for ``device``; raises ``DeviceError`` when its first provider is missing."""
    if device not in PROVIDERS:
        raise DeviceError(f"unknown device {device!r} (choose from {', '.join(PROVIDERS)})")
    wanted = PROVIDERS[device]
    have = available_providers() if available is None else available
    if wanted[0] not in have:
        raise DeviceError(
            f"--device {device} needs ONNX Runtime's {wanted[0]} (install the 'gpu' extra, onnxruntime-gpu, "
            f"on a machine with a CUDA GPU); this onnxruntime offers only {', '.join(have) or 'nothing'}"
        )
    return list(wanted)


def require_device(device: str, need_torch: bool = False) -> None:
    """Fail early (``DeviceError``) when ``device`` cannot run here; ``need_torch`` also checks PyTorch CUDA."""
    providers_for(device)
    if device == "cuda" and need_torch:
        import torch

        if not torch.cuda.is_available():
            raise DeviceError("--device cuda needs a CUDA build of PyTorch with a visible GPU (torch.cuda)")


def session_options(threads: int | None = None, spinning: bool = True) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # graphs are already optimized by ORTOptimizer; keep ORT's own basic+extended passes as at serving time
    return opts


def make_session(onnx_path: str | Path, device: str = "cpu", threads: int | None = None, spinning: bool = True) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            str(onnx_path), sess_options=session_options(threads, spinning), providers=providers_for(device)
        )
    except DeviceError:
        raise
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"ONNX Runtime cannot load {onnx_path}: {str(exc).splitlines()[0]}") from exc


def session_runner(sess: Any, feed: dict[str, Any], device: str = "cpu") -> Any:
    """A no-argument callable running ``sess`` on ``feed``. On CUDA, inputs are bound once on the device and
    outputs to device memory (I/O binding), so host-device copies are not what gets timed."""
    if device != "cuda":
        return lambda: sess.run(None, feed)
    import onnxruntime as ort

    binding = sess.io_binding()
    for name, arr in feed.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cuda")

    def run() -> None:
        binding.synchronize_inputs()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


@dataclass(frozen=True)
class ModelFolder:
    """A model folder as ``bench``/``export`` see it: which runtime serves it and its config."""

    path: Path
    runtime: str  # "onnxruntime" | "pytorch"
    config: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))


def inspect_folder(path: str | Path) -> ModelFolder:
    """Classify ``path`` as an ONNX folder (``model.onnx``) or a Hugging Face folder (weights + config)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        path = path.parent
    if not path.is_dir():
        raise ModelError(f"{path} is not a model folder (no such directory)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{path} is not a model folder (no config.json)")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{cfg_file} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{cfg_file} is not a JSON object")
    if (path / ONNX_FILE).is_file():
        return ModelFolder(path, "onnxruntime", config)
    if any((path / w).is_file() for w in HF_WEIGHTS):
        return ModelFolder(path, "pytorch", config)
    raise ModelError(f"{path} holds neither {ONNX_FILE} nor Hugging Face weights ({', '.join(HF_WEIGHTS[:2])})")


def load_hf_classifier(path: str | Path) -> Any:
    """Load a Hugging Face sequence classifier with eager attention (what ORT's fusions recognise)."""
    folder = inspect_folder(path)
    if folder.runtime != "pytorch":
        raise ModelError(f"{folder.path} is an ONNX folder; give the Hugging Face model folder it came from")
    archs = folder.config.get("architectures") or []
    if archs and not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ModelError(
            f"{folder.path} is a {', '.join(map(str, archs))} checkpoint, not a sequence classifier"
            " (fine-tune it with `kdnas-deploy teacher` or `distill` first)"
        )
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder.path), attn_implementation="eager")
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{folder.path}: unsupported architecture ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise ModelError(f"{folder.path}: cannot load the model ({str(exc).splitlines()[0]})") from None
    return model.eval()


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"no usable tokenizer in {path} ({str(exc).splitlines()[0]}); pass --tokenizer") from None
