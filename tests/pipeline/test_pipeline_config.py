import pytest
import yaml

from kdnas_deploy.errors import ConfigError
from kdnas_deploy.pipeline.config import PipelineConfig


def test_defaults_roundtrip():
    cfg = PipelineConfig()
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


def test_teacher_allow_weak_is_off_by_default():
    assert PipelineConfig().teacher.allow_weak is False
    assert PipelineConfig.from_dict({"teacher": {"allow_weak": True}}).teacher.allow_weak is True


def test_partial_config_fills_defaults():
    cfg = PipelineConfig.from_dict({"task": {"name": "sst2"}, "search": {"episodes": 2},
                                    "devices": {"name": "cpu", "budget_ms": 5}})
    assert cfg.task.name == "sst2" and cfg.search.episodes == 2 and cfg.search.top_k == 4
    assert cfg.devices[0].budget_ms == 5.0


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"search": {"episodez": 3}}, "search.episodez: unknown key"),
        ({"search": {"episodes": "three"}}, "search.episodes: expected int, got str"),
        ({"devices": [{"name": "a"}, {"name": "b", "threads": 1.5}]}, r"devices\[1\].threads: expected int"),
        ({"devices": [{"name": "a", "budget_ms": -1}]}, r"devices\[0\].budget_ms: must be > 0"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"teacher": {"allow_weak": "yes"}}, "teacher.allow_weak: expected bool"),
        ({"task": "sst2"}, "task: expected a mapping"),
        ({"search": {"proxy_fraction": 2}}, "proxy_fraction"),
        ({"devices": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"devices": [{"name": "a", "headroom": 1.0}]}, r"devices\[0\].headroom: must be in \[0, 1\)"),
        ({"devices": [{"name": "a", "headroom": "fast"}]},
         r"devices\[0\].headroom: expected a number, got str \('fast'\) or must be one of 'auto', got 'fast'$"),
        ({"latency": {"seq": "long"}}, r"^latency.seq: expected int, got str \('long'\) or must be one of 'auto'"),
        ({"devices": [{"name": "a", "budget_fraction": float("nan")}]}, "expected a finite number"),
        ({"devices": [{"name": "a", "budget_fraction": float("inf")}]}, "expected a finite number"),
        ({"devices": [{"name": "a", "precision": "fp64"}]}, "precision 'fp64' is not one of fp32, int8"),
        ({"devices": [{"name": "a", "device": "tpu"}]}, "unknown device 'tpu'"),
        ({"devices": [{"name": "a", "threads": 10**12}]}, r"threads must be an integer in \[1, 1024\]"),
        ({"export": {"optimize": "O9"}}, "export.optimize: unknown level 'O9'"),
        ({"latency": {"seq": 0}}, "latency.seq must be an integer"),
        ({"bench": {"threads": 0}}, "bench.threads must be an integer"),
        ({"search": {"seed": -1}}, "seed must be an integer"),
        ({"search": {"episodes": 10**12}}, "episodes must be an integer"),
    ],
)
def test_bad_configs_name_the_key(data, needle):
    with pytest.raises(ConfigError, match=needle):
        PipelineConfig.from_dict(data)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PipelineConfig.from_yaml(tmp_path / "missing.yaml")
    p = tmp_path / "c.yaml"
    p.write_text("search: {episodes: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PipelineConfig.from_yaml(p)
    p.write_text(yaml.safe_dump({"search": {"seed": True}}))
    with pytest.raises(ConfigError, match="search.seed: expected int, got bool"):
        PipelineConfig.from_yaml(p)


def test_the_search_section_is_the_search_settings():
    from kdnas_deploy.search.config import SearchSettings

    cfg = PipelineConfig.from_dict({"search": {
        "strategy": "optuna-tpe", "heldout_size": 300, "reward": {"metric": "loss", "hard_budget": True},
        "controller": {"prior": "none"}, "executor": {"name": "ray", "options": {"cpus_per_candidate": 1}},
    }})  # fmt: skip
    assert isinstance(cfg.search, SearchSettings)
    assert cfg.search.reward.metric == "loss" and cfg.search.heldout_size == 300
    assert cfg.search.executor.name == "ray" and cfg.search.executor.options == {"cpus_per_candidate": 1}
    assert PipelineConfig().search.episodes == SearchSettings().episodes  # one default, the search's


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"search": {"strategy": "grid"}}, "unknown strategy 'grid'"),
        ({"search": {"executor": {"name": "dask"}}}, "unknown executor 'dask'"),
        ({"search": {"reward": {"metric": "f1"}}}, "reward metric"),
        ({"search": {"alpha": 0.0}}, "search.alpha: unknown key"),
        ({"search": {"batch": 4}}, "search.batch"),
    ],
)
def test_bad_search_settings_are_refused(data, needle):
    with pytest.raises(ConfigError, match=needle):
        PipelineConfig.from_dict(data)


def test_every_shipped_config_loads_with_the_strict_loader(repo_root):
    from kdnas_deploy.space import SearchSpace

    paths = sorted((repo_root / "configs").rglob("*.y*ml"))
    spaces = [p for p in paths if p.parent.name == "spaces"]
    pipelines = [p for p in paths if p not in spaces]
    assert len(pipelines) >= 11 and spaces  # configs/*.yaml and the eight configs/glue/<task>[-int8].yaml
    for path in pipelines:
        PipelineConfig.from_yaml(path)
    for path in spaces:
        SearchSpace.load(str(path))


@pytest.mark.parametrize("task", ["sst2", "mrpc", "cola", "stsb"])
def test_glue_configs_differ_only_by_task_and_precision(repo_root, task):
    fp32 = PipelineConfig.from_yaml(repo_root / "configs" / "glue" / f"{task}.yaml")
    int8 = PipelineConfig.from_yaml(repo_root / "configs" / "glue" / f"{task}-int8.yaml")
    ref = PipelineConfig.from_yaml(repo_root / "configs" / "glue" / "sst2.yaml")
    assert fp32.task.name == task and fp32.search == ref.search and fp32.teacher == ref.teacher
    assert int8.search == fp32.search and int8.export.quantize == "int8" and int8.devices[0].precision == "int8"
    assert fp32.teacher.preset == "auto" and fp32.search.on_degenerate == "escalate"
    assert fp32.search.proxy_min_rows > 0 and fp32.search.proxy_min_steps > 0


def test_teacher_settings_reach_run_configs():
    cfg = PipelineConfig.from_dict({"teacher": {"preset": "glue-small", "epochs": 4, "learning_rate": 2e-5,
                                                "max_seq_len": 96}})  # fmt: skip
    assert cfg.teacher.overrides() == {"epochs": 4, "learning_rate": 2e-5, "max_seq_len": 96}
    for bad, needle in [({"preset": "huge"}, "teacher.preset: unknown preset 'huge'"),
                        ({"max_seq_len": 4}, "teacher.max_seq_len"),
                        ({"learning_rate": -1.0}, "teacher.learning_rate")]:
        with pytest.raises(ConfigError, match=needle):
            PipelineConfig.from_dict({"teacher": bad})
    with pytest.raises(ConfigError, match="on_degenerate"):
        PipelineConfig.from_dict({"search": {"on_degenerate": "ignore"}})


def test_non_utf8_config_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"task: {name: caf\xe9}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        PipelineConfig.from_yaml(p)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"teacher": {"path": "no-such-teacher"}}, "teacher.path: model folder not found"),
        ({"task": {"name": "no-such-task"}}, "task.name: unknown task 'no-such-task'"),
        ({"task": {"name": "builtin", "data_dir": "no-such-dir"}}, "task.data_dir: folder not found"),
    ],
)
def test_run_refuses_before_it_writes(tmp_path, monkeypatch, change, needle):
    from kdnas_deploy.errors import KdnasError
    from kdnas_deploy.pipeline.run import run_pipeline

    monkeypatch.chdir(tmp_path)
    cfg = PipelineConfig.from_dict({"devices": [{"name": "cpu", "budget_ms": 5}], **change})
    with pytest.raises(KdnasError, match=needle):
        run_pipeline(cfg, tmp_path / "out", echo=lambda s: None, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_train_split_smaller_than_proxy_plus_heldout_is_scaled_down_with_a_notice(caplog):
    import logging

    from kdnas_deploy.pipeline.sizes import proxy_plan

    cfg = PipelineConfig.from_dict({"search": {"proxy_min_rows": 10**6, "heldout_size": 10**6}})
    with caplog.at_level(logging.WARNING, logger="kdnas_deploy"):
        plan = proxy_plan(cfg)
    assert plan.proxy + plan.heldout == plan.train and plan.heldout == plan.train // 5
    assert "proxy set scaled down" in caplog.text and "held-out slice scaled down" in caplog.text


def test_a_train_split_too_small_for_a_search_refuses_before_anything_is_written(tmp_path, monkeypatch):
    from kdnas_deploy.errors import DataError
    from kdnas_deploy.pipeline.run import run_pipeline

    data = tmp_path / "tiny"
    data.mkdir()
    (data / "train.csv").write_text("text,label\ngood film,1\n")
    (data / "dev.csv").write_text("text,label\ngood film,1\nbad film,0\n")
    monkeypatch.chdir(tmp_path)
    cfg = PipelineConfig.from_dict({"task": {"name": str(data)}, "devices": [{"name": "cpu", "budget_ms": 5}]})
    with pytest.raises(DataError, match="1 row"):
        run_pipeline(cfg, tmp_path / "out", echo=lambda s: None, progress=False)
    assert not (tmp_path / "out").exists()


def test_headroom_auto_is_resolved_from_the_devices_table_before_the_search(tmp_path):
    """``auto`` becomes the table's p95 under-prediction (here 5%), echoed, applied and kept as applied."""
    import json

    from kdnas_deploy.pipeline.run import Pipeline

    table = tmp_path / "t.json"
    table.write_text("{}")
    points = [{"raw_predicted_ms": 2.0, "measured_ms": 2.1}] * 30
    (tmp_path / "t.validation.json").write_text(json.dumps({"points": points}))
    cfg = PipelineConfig.from_dict({"devices": [{"name": "a", "budget_ms": 4.0, "headroom": "auto"},
                                                {"name": "b", "budget_ms": 4.0, "headroom": 0.1}]})  # fmt: skip
    lines: list[str] = []
    pipe = Pipeline(cfg, tmp_path / "run", echo=lines.append)
    targets = pipe.search_budgets([(str(table), 4.0), (str(table), 4.0)])
    assert [ms for _, ms in targets] == [pytest.approx(3.8), pytest.approx(3.6)]
    assert pipe.headroom == {"a": pytest.approx(0.05), "b": 0.1}
    assert any(line.startswith("headroom a: auto = 5.0% (p95") for line in lines)
