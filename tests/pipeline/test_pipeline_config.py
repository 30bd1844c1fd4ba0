import pytest
import yaml

from kdnas_deploy.errors import ConfigError
from kdnas_deploy.pipeline.config import PipelineConfig


def test_defaults_roundtrip():
    cfg = PipelineConfig()
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


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
        ({"task": "sst2"}, "task: expected a mapping"),
        ({"search": {"proxy_fraction": 2}}, "proxy_fraction"),
        ({"devices": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"devices": [{"name": "a", "headroom": 1.0}]}, r"devices\[0\].headroom: must be in \[0, 1\)"),
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
