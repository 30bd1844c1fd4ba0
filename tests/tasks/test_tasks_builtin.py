import time
from collections import Counter

import numpy as np

from kdnas_deploy.tasks import get_task
from kdnas_deploy.tasks.builtin import generate


def test_builtin_is_deterministic_balanced_and_fast():
    t0 = time.perf_counter()
    task = get_task("builtin")
    train, dev = task.load_split("train"), task.load_split("dev")
    assert time.perf_counter() - t0 < 10
    assert len(train) == 6000 and len(dev) == 1000
    assert list(train["sentence"][:20]) == generate("train")["sentence"][:20]
    assert 0.4 < np.mean(train["label"]) < 0.6
    assert not set(dev["sentence"]) & set(train["sentence"][:2000]) or len(set(dev["sentence"])) > 900
    assert generate("train", seed=1)["sentence"][:5] != generate("train")["sentence"][:5]


def test_builtin_is_not_solved_by_bag_of_words():
    """A naive-Bayes bag-of-words model (no word order) stays far from perfect: the task needs structure."""
    train, dev = generate("train"), generate("dev")
    counts = {0: Counter(), 1: Counter()}
    for text, label in zip(train["sentence"], train["label"], strict=True):
        counts[label].update(text.split())
    vocab = set(counts[0]) | set(counts[1])
    totals = {c: sum(counts[c].values()) + len(vocab) for c in (0, 1)}

    def score(text, c):
        return sum(np.log((counts[c][w] + 1) / totals[c]) for w in text.split())

    preds = [int(score(t, 1) > score(t, 0)) for t in dev["sentence"]]
    acc = float(np.mean(np.array(preds) == np.array(dev["label"])))
    assert 0.5 < acc < 0.8, acc
