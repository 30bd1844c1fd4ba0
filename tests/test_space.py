import pytest
import yaml

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SpaceError
from kdnas_deploy.space import PRESETS, SearchSpace


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shipped_yaml_matches_preset(repo_root, name):
    from_file = SearchSpace.from_yaml(repo_root / "configs" / "spaces" / f"{name}.yaml")
    assert from_file == SearchSpace.load(name)
    assert from_file.fingerprint == SearchSpace.load(name).fingerprint


def test_members_respect_divisibility_and_count():
    space = SearchSpace.load("minilm-l6")
    members = list(space)
    assert len(members) == len(space) == len(set(members))
    assert all(a.hidden_size % a.num_heads == 0 for a in members)
    assert space.teacher in space
    expected = len(space.layers) * sum(len(hs) for _, hs in space.heads) * len(space.ffn)
    assert len(space) == expected


def test_sample_is_seeded_and_in_space():
    space = SearchSpace.load("bert-base")
    a = space.sample(20, rng=1)
    assert a == space.sample(20, rng=1)
    assert all(x in space for x in a)
    assert len(set(a)) == 20


def test_encode_decode_roundtrip():
    space = SearchSpace.load("minilm-l6")
    for arch in space.sample(30, rng=0):
        assert space.decode(space.encode(arch)) == arch


def test_check_names_dimension():
    space = SearchSpace.load("minilm-l6")
    with pytest.raises(SpaceError, match="num_layers=9"):
        space.check(Architecture(9, 384, 12, 1536))
    with pytest.raises(SpaceError, match="ffn_size=1000"):
        space.check(Architecture(2, 384, 12, 1000))


def _write(tmp_path, data):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BASE = {"name": "t", "choices": {"num_layers": [1, 2], "hidden_size": [64, 96], "num_heads": [2, 4], "ffn_size": [128]}}


def test_list_heads_filter_invalid_combinations(tmp_path):
    space = SearchSpace.from_yaml(_write(tmp_path, BASE))
    assert space.heads_for(96) == (2, 4)
    data = {**BASE, "choices": {**BASE["choices"], "hidden_size": [64, 90], "num_heads": [4, 8]}}
    with pytest.raises(SpaceError, match="divides hidden size 90"):
        SearchSpace.from_yaml(_write(tmp_path, data))


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d["choices"].update(depth=[1]), "choices.depth: unknown key"),
        (lambda d: d["choices"].pop("ffn_size"), "missing key.*ffn_size"),
        (lambda d: d["choices"].update(num_heads={64: [3], 96: [3]}), "do not divide"),
        (lambda d: d["choices"].update(num_layers=[]), "non-empty"),
        (lambda d: d.update(schema_version=99), "schema_version"),
    ],
)
def test_malformed_spaces(tmp_path, mutate, needle):
    import copy

    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(SpaceError, match=needle):
        SearchSpace.from_yaml(_write(tmp_path, data))


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        SearchSpace.from_yaml(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("choices: [1, 2\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        SearchSpace.from_yaml(p)


def test_presets_ship_inside_the_package():
    from kdnas_deploy.config import PRESET_DIR

    assert {"minilm-l6", "bert-base"} <= set(PRESETS.names)
    for name in PRESETS:
        assert PRESETS.path(name).is_relative_to(PRESET_DIR)  # package data, not the checkout's configs/


def test_non_utf8_space_file_is_one_line(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpaceError, match="not UTF-8"):
        SearchSpace.from_yaml(p)


def test_unknown_preset_is_refused():
    with pytest.raises(SpaceError, match="not found"):
        SearchSpace.load("minilm-l7")
