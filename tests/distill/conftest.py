"""Tiny real models for distill tests: a word-level BERT tokenizer built from the built-in task's words and
small randomly initialised BERT teachers saved as Hugging Face folders (no hub access)."""

from __future__ import annotations

from pathlib import Path

import pytest

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab() -> list[str]:
    from kdnas_deploy.tasks.builtin import generate

    words: set[str] = set()
    for split in ("train", "dev"):
        for text in generate(split, size=400)["sentence"]:
            words.update(text.replace("'", " ' ").split())
    words.update("a the it is was not good bad movie film , .".split())
    return SPECIAL + sorted(words)


def save_tiny_classifier(
    folder: Path,
    num_labels: int = 2,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    ffn: int = 64,
    seed: int = 0,
    head: bool = True,
) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(cfg) if head else BertModel(cfg)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("teacher") / "tiny")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A pretrained-encoder-like folder (BertModel, no classification head)."""
    return save_tiny_classifier(tmp_path_factory.mktemp("backbone") / "enc", head=False)


@pytest.fixture(scope="session")
def builtin_small():
    from kdnas_deploy.tasks import get_task

    task = get_task("builtin")
    return task, task.load_split("train").select(range(96)), task.load_split("dev").select(range(48))
