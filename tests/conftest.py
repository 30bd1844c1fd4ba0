"""Shared fixtures. Tests that need ../shared/data/glue skip when it is absent; nothing reaches for a hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("KDNAS_TEST_GLUE_DIR", REPO_ROOT.parent / "shared" / "data" / "glue"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not (GLUE_DIR / "SST-2" / "dev.tsv").is_file():
        pytest.skip(f"real GLUE data not found at {GLUE_DIR}")
    return GLUE_DIR
