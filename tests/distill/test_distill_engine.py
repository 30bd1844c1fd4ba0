import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdnas_deploy.arch import Architecture  # noqa: E402
from kdnas_deploy.distill import DistillConfig, DistillResult, distill  # noqa: E402
from kdnas_deploy.distill.loop import LoopConfig, run_loop  # noqa: E402
from kdnas_deploy.errors import ConfigError, DataError  # noqa: E402

ARCH = Architecture(num_layers=1, hidden_size=16, num_heads=2, ffn_size=32)


def test_proxy_run_with_cache_is_deterministic_and_reuses_teacher_outputs(
    tiny_teacher, builtin_small, tmp_path
):
    task, train, dev = builtin_small
    cfg = DistillConfig.proxy(batch_size=16)
    first = distill(
        tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, cache_dir=tmp_path, progress=False
    )
    assert isinstance(first, DistillResult) and first.model_dir is None and first.cache_hit is False
    assert set(first.metrics) == {"accuracy"} and first.score == first.metrics["accuracy"]
    assert np.isfinite(first.final_loss) and first.final_loss > 0
    entries = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    assert json.loads((entries[0] / "meta.json").read_text())["layers"] == [1]  # relation-layer input only
    assert np.load(entries[0] / "hidden_1.npy").dtype == np.float16
    again = distill(
        tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, cache_dir=tmp_path, progress=False
    )
    assert again.cache_hit is True and again.final_loss == pytest.approx(first.final_loss, rel=1e-6)
    assert again.metrics == first.metrics
    other = distill(
        tiny_teacher,
        ARCH,
        task,
        config=cfg,
        train=train.select(range(80)),
        eval=dev,
        cache_dir=tmp_path,
        progress=False,
    )
    assert other.cache_hit is False  # a different example set gets its own entry
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


def test_live_and_cached_teacher_give_the_same_training(tiny_teacher, builtin_small, tmp_path):
    task, train, dev = builtin_small
    cfg = DistillConfig.full(epochs=1, batch_size=16, hidden_weight=1.0, hard_weight=0.5)
    live = distill(tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, progress=False)
    cached = distill(
        tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, cache_dir=tmp_path, progress=False
    )
    assert cached.final_loss == pytest.approx(live.final_loss, rel=2e-2)  # fp16 cache


def test_full_run_writes_a_student_folder(tiny_teacher, builtin_small, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    task, train, dev = builtin_small
    out = tmp_path / "student"
    cfg = DistillConfig.full(epochs=2, batch_size=16, init="random")
    res = distill(tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, out_dir=out, progress=False)
    assert res.model_dir == str(out) and len(res.history) == 2
    model = AutoModelForSequenceClassification.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    assert Architecture.from_config(model.config) == ARCH
    assert Architecture.from_json((out / "architecture.json").read_text()) == ARCH
    record = json.loads((out / "distill_record.json").read_text())
    assert record["config"]["init"] == "random" and record["metrics"] == res.metrics
    assert record["data"]["train_examples"] == 96 and record["schema_version"] == 1
    assert not any(p.name.endswith(".work") for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError):
        distill(tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, out_dir=out, progress=False)


def _regression_loss(model, data_x, data_y, die_at=None):
    """MSE of ``model`` on a batch; the ``die_at``-th call raises KeyboardInterrupt (a kill)."""
    calls = {"n": 0}

    def loss_fn(idx):
        calls["n"] += 1
        if die_at is not None and calls["n"] == die_at:
            raise KeyboardInterrupt
        i = torch.as_tensor(idx)
        return ((model(data_x[i]).squeeze(-1) - data_y[i]) ** 2).mean()

    return loss_fn


def test_loop_resumes_after_a_kill_to_the_same_weights(tmp_path):
    def make():
        torch.manual_seed(0)
        return torch.nn.Linear(3, 1)

    data_x = torch.randn(40, 3)
    data_y = data_x @ torch.tensor([1.0, -2.0, 0.5])
    lengths = np.arange(40) % 7 + 1
    cfg = LoopConfig(epochs=2, batch_size=4, learning_rate=0.05, seed=3, checkpoint_every=3)

    def run(model, work, die_at=None):
        loss_fn = _regression_loss(model, data_x, data_y, die_at)
        return run_loop(
            config=cfg,
            lengths=lengths,
            modules={"m": model},
            loss_fn=loss_fn,
            evaluate=lambda: ({"neg_w": -float(model.weight.detach().sum())}, 0.0),
            on_best=lambda: None,
            work_dir=work,
            progress=False,
        )

    ref = make()
    run(ref, tmp_path / "a")
    killed = make()
    with pytest.raises(KeyboardInterrupt):
        run(killed, tmp_path / "b", die_at=14)
    resumed = make()
    result = run(resumed, tmp_path / "b")
    assert result.resumed_from_step == 12
    assert torch.allclose(resumed.weight, ref.weight, atol=1e-6)


def test_eval_every_evaluates_mid_epoch_and_keeps_the_best_step(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    data_x = torch.ones(40, 1)
    scores = iter([0.1, 0.9, 0.3, 0.2, 0.5, 0.4, 0.6, 0.7])  # the second evaluation (step 6) is the best
    saved = []

    def loss_fn(idx):
        return ((model(data_x[torch.as_tensor(idx)]) - 1.0) ** 2).mean()

    def evaluate():
        s = next(scores)
        return {"acc": s}, s

    result = run_loop(
        config=LoopConfig(epochs=2, batch_size=4, learning_rate=0.01, seed=0, checkpoint_every=0, eval_every=3),
        lengths=np.full(40, 5),
        modules={"m": model},
        loss_fn=loss_fn,
        evaluate=evaluate,
        on_best=lambda: saved.append(1),
        work_dir=tmp_path / "w",
        progress=False,
    )
    state = result.state
    # 10 steps per epoch: every 3rd step and at each epoch end (step 10 and 20)
    assert [h["step"] for h in state.history] == [3, 6, 9, 10, 12, 15, 18, 20]
    assert state.history[1]["epoch"] == 0.6
    assert state.best_index == 1 and state.best_epoch == 0.6 and state.best_score == 0.9
    assert len(saved) == 2  # published at the first evaluation and at the better second one


def test_weight_average_is_evaluated_kept_and_resumed(tmp_path):
    from kdnas_deploy.distill.loop import WeightAverage

    p = torch.nn.Parameter(torch.zeros(2))
    avg = WeightAverage([p], decay=0.5)
    for value in (4.0, 8.0):
        with torch.no_grad():
            p.fill_(value)
        avg.update()  # decay ramps up: min(0.5, 2/11) then min(0.5, 3/12)
    expected = 4.0 * (1 - 2 / 11) * 0.25 + 8.0 * 0.75
    assert torch.allclose(avg.shadow[0], torch.full((2,), expected))
    with avg.swapped():
        assert torch.allclose(p.data, avg.shadow[0])
    assert torch.equal(p.data, torch.full((2,), 8.0))

    data_x = torch.randn(24, 3)
    data_y = data_x @ torch.tensor([1.0, -2.0, 0.5])
    cfg = LoopConfig(epochs=2, batch_size=4, learning_rate=0.05, seed=3, checkpoint_every=2, ema_decay=0.9)

    def run(work, die_at=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        seen = []
        loss_fn = _regression_loss(model, data_x, data_y, die_at)

        def evaluate():
            seen.append(model.weight.detach().clone())
            return {"w": float(model.weight.detach().sum())}, 0.0

        run_loop(config=cfg, lengths=np.full(24, 3), modules={"m": model}, loss_fn=loss_fn, evaluate=evaluate,
                 on_best=lambda: None, work_dir=work, progress=False)  # fmt: skip
        return model, seen

    model, seen = run(tmp_path / "a")
    assert not torch.allclose(seen[-1], model.weight)  # evaluated on the average, trained weights restored
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", die_at=9)
    _, resumed_seen = run(tmp_path / "b")
    assert torch.allclose(resumed_seen[-1], seen[-1], atol=1e-6)  # the average survives the kill
    with pytest.raises(ConfigError):
        DistillConfig(ema_decay=1.0)


def test_bad_inputs(tiny_teacher, builtin_small, tmp_path):
    from kdnas_deploy.tasks import get_task

    task, train, dev = builtin_small
    with pytest.raises(ConfigError):
        DistillConfig(init="magic")
    with pytest.raises(DataError, match="lacks column"):
        distill(
            tiny_teacher,
            ARCH,
            task,
            config=DistillConfig.proxy(),
            train=train.rename_column("sentence", "x"),
            eval=dev,
            progress=False,
        )
    with pytest.raises(DataError, match="empty"):
        distill(
            tiny_teacher,
            ARCH,
            task,
            config=DistillConfig.proxy(),
            train=train.select([]),
            eval=dev,
            progress=False,
        )
    csv = tmp_path / "three.csv"
    csv.write_text("text,label\n" + "".join(f"good movie {i},{i % 3}\n" for i in range(30)))
    with pytest.raises(DataError, match="3 label"):
        distill(tiny_teacher, ARCH, get_task(csv), config=DistillConfig.proxy(), progress=False)


def test_fractional_epochs_evaluate_at_the_end(tiny_teacher, builtin_small):
    task, train, dev = builtin_small
    cfg = DistillConfig.proxy(epochs=0.5, batch_size=16)
    res = distill(tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, progress=False)
    assert [h["epoch"] for h in res.history] == [0.5] and res.history[0]["step"] == 3


def test_init_from_copies_a_wider_student_progressive_shrinking(tiny_teacher, builtin_small, tmp_path):
    from transformers import AutoModelForSequenceClassification

    task, train, dev = builtin_small
    wide_dir = tmp_path / "wide"
    wide_cfg = DistillConfig.full(epochs=1, batch_size=16)
    distill(tiny_teacher, Architecture(1, 32, 2, 64), task, config=wide_cfg, train=train, eval=dev,
            out_dir=wide_dir, progress=False)  # fmt: skip
    # a learning rate of ~0 leaves the narrow student at its initial weights: copied from the wide one
    cfg = DistillConfig.full(epochs=0.5, batch_size=16, learning_rate=1e-12, init_from=str(wide_dir))
    res = distill(tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, out_dir=tmp_path / "narrow",
                  progress=False)  # fmt: skip
    record = json.loads((tmp_path / "narrow" / "distill_record.json").read_text())
    assert record["init"]["init_from"] == str(wide_dir) and record["config"]["init_from"] == str(wide_dir)
    wide = AutoModelForSequenceClassification.from_pretrained(wide_dir).bert.embeddings.word_embeddings.weight
    narrow = AutoModelForSequenceClassification.from_pretrained(res.model_dir).bert.embeddings.word_embeddings.weight
    wide, narrow = wide.detach(), narrow.detach()
    for j in range(narrow.shape[1]):  # every kept hidden dimension is one of the wide student's, unchanged
        assert any(torch.allclose(narrow[:, j], wide[:, i], atol=1e-6) for i in range(wide.shape[1]))
    with pytest.raises(ConfigError, match="init_from"):
        DistillConfig(init="random", init_from=str(wide_dir))


def test_masked_augmentation_adds_teacher_labelled_copies(tiny_teacher, builtin_small, tmp_path):
    from kdnas_deploy.distill.data import Encoded, augment_masked

    enc = Encoded([[101, 5, 6, 7, 102], [101, 8, 102]], [[0] * 5, [0] * 3], np.array([1, 0]), "f")
    out = augment_masked(enc, copies=2, rate=0.3, mask_id=103, special_ids={101, 102}, seed=0)
    assert len(out) == 6 and out.labels.tolist() == [1, 0, 1, 0, 1, 0] and out.fingerprint != "f"
    assert out.input_ids[:2] == enc.input_ids  # originals first, unchanged
    for row, orig in zip(out.input_ids[2:], enc.input_ids * 2, strict=True):
        assert len(row) == len(orig) and row[0] == 101 and row[-1] == 102  # specials kept
        changed = [i for i, (a, b) in enumerate(zip(row, orig, strict=True)) if a != b]
        assert changed and all(row[i] == 103 for i in changed)  # at least one token masked, only masks
    again = augment_masked(enc, copies=2, rate=0.3, mask_id=103, special_ids={101, 102}, seed=0)
    assert again.input_ids == out.input_ids and again.fingerprint == out.fingerprint
    assert augment_masked(enc, 0, 0.3, 103, {101, 102}, 0) is enc

    task, train, dev = builtin_small
    cfg = DistillConfig.full(epochs=1, batch_size=16, augment_copies=1)
    distill(tiny_teacher, ARCH, task, config=cfg, train=train, eval=dev, out_dir=tmp_path / "aug", progress=False)
    record = json.loads((tmp_path / "aug" / "distill_record.json").read_text())
    assert record["data"]["train_examples"] == 2 * len(train) and record["config"]["augment_copies"] == 1
    with pytest.raises(ConfigError):
        DistillConfig(augment_mask_rate=1.5)


def test_prepared_teacher_cache_is_the_one_distill_reads(tiny_teacher, builtin_small, tmp_path):
    from kdnas_deploy.distill import prepare_teacher_cache

    task, train, dev = builtin_small
    cfg = DistillConfig.proxy(batch_size=16)
    assert prepare_teacher_cache(tiny_teacher, task, config=cfg, train=train, cache_dir=tmp_path) is True
    res = distill(tiny_teacher, ARCH, task, config=cfg.with_overrides(seed=7), train=train, eval=dev,
                  cache_dir=tmp_path, progress=False)  # fmt: skip
    assert res.cache_hit is True  # any student, any seed: the first distillation already reads the cache
    # the hidden-state loss needs layers that depend on the student's depth: nothing is prepared
    other = tmp_path / "other"
    assert prepare_teacher_cache(tiny_teacher, task, config=DistillConfig.full(), train=train, cache_dir=other) is False
    assert not other.exists() or not any(other.iterdir())
