import pytest

torch = pytest.importorskip("torch")

from kdnas_deploy.arch import Architecture  # noqa: E402
from kdnas_deploy.distill.data import collate, encode  # noqa: E402
from kdnas_deploy.distill.init import importance_scores, init_from_teacher  # noqa: E402
from kdnas_deploy.distill.teachers import load_classifier, load_tokenizer  # noqa: E402
from kdnas_deploy.student import build_student  # noqa: E402


def _batch(tiny_teacher, builtin_small):
    task, train, _ = builtin_small
    enc = encode(train, task, load_tokenizer(tiny_teacher), 64)
    import numpy as np

    return collate(enc, np.arange(16))


def test_same_shape_student_reproduces_the_teacher_exactly(tiny_teacher, builtin_small):
    teacher = load_classifier(tiny_teacher)
    arch = Architecture.from_config(teacher.config)
    student = build_student(arch, vocab_size=teacher.config.vocab_size, max_position_embeddings=128)
    batch = _batch(tiny_teacher, builtin_small)
    info = init_from_teacher(student, teacher, arch, "uniform+last", importance_scores(teacher, [batch]))
    assert [layer["teacher_layer"] for layer in info["layers"]] == [1, 2]
    with torch.no_grad():
        assert torch.allclose(student(**batch).logits, teacher(**batch).logits, atol=1e-5)


def test_pruned_student_is_closer_to_teacher_than_random(tiny_teacher, builtin_small):
    teacher = load_classifier(tiny_teacher)
    batch = _batch(tiny_teacher, builtin_small)
    arch = Architecture(num_layers=1, hidden_size=24, num_heads=3, ffn_size=48)
    kw = dict(vocab_size=teacher.config.vocab_size, max_position_embeddings=128)
    pruned, rand = build_student(arch, **kw), build_student(arch, **kw)
    info = init_from_teacher(pruned, teacher, arch, "last", importance_scores(teacher, [batch]))
    assert info["layers"][0]["teacher_layer"] == 2 and len(info["layers"][0]["heads"]) == 3
    with torch.no_grad():
        t = teacher.bert.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
        p = pruned.bert.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    # the kept hidden dims of the embedding output are the teacher's own (up to LayerNorm statistics)
    assert p.shape[-1] == 24 and t.shape[-1] == 32
    w_t = teacher.bert.embeddings.word_embeddings.weight
    w_p = pruned.bert.embeddings.word_embeddings.weight
    cols = [int((w_t[:5] - w_p[:5, j : j + 1]).abs().sum(0).argmin()) for j in range(24)]
    assert cols == sorted(cols) and len(set(cols)) == 24
    assert not torch.equal(rand.bert.embeddings.word_embeddings.weight[:, :24], w_t[:, :24])


def test_merged_heads_when_student_heads_are_wider(tiny_teacher, builtin_small):
    teacher = load_classifier(tiny_teacher)  # 4 heads of 8
    arch = Architecture(num_layers=2, hidden_size=32, num_heads=2, ffn_size=64)  # 2 heads of 16
    student = build_student(arch, vocab_size=teacher.config.vocab_size, max_position_embeddings=128)
    info = init_from_teacher(student, teacher, arch, "uniform", None)
    assert all(len(layer["heads"]) == 4 for layer in info["layers"])
    batch = _batch(tiny_teacher, builtin_small)
    with torch.no_grad():
        assert torch.isfinite(student(**batch).logits).all()
