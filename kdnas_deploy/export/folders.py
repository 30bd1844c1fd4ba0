"""Model folders as ``export`` and ``bench`` see them: an ONNX folder or a Hugging Face folder, and loading
the Hugging Face classifier and tokenizer (sessions and devices are :mod:`kdnas_deploy.runtime`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import ModelError
from kdnas_deploy.runtime.deploy import ONNX_FILE

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


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
    except Exception as exc:  # noqa: BLE001 - a corrupt safetensors file raises SafetensorError (not OSError)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load the checkpoint in {folder.path}: {first}") from None
    return model.eval()


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"no usable tokenizer in {path} ({str(exc).splitlines()[0]}); pass --tokenizer") from None
