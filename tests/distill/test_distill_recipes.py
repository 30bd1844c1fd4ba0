"""Teacher recipes: size tiers, epochs from a minimum of optimizer steps, length from the task's token lengths."""

from __future__ import annotations

import json

import pytest

from kdnas_deploy.distill import recipes
from kdnas_deploy.errors import ConfigError


@pytest.mark.parametrize(
    ("rows", "tier", "epochs"),
    [(635, "glue-tiny", 10.0), (2_490, "glue-small", 7.0), (3_668, "glue-small", 5.0), (8_551, "glue-small", 3.0),
     (67_349, "glue-medium", 2.0), (104_743, "glue-medium", 2.0), (392_702, "glue-large", 1.0)],
)
def test_auto_tiers_cover_glue_tasks_not_shipped_here(rows, tier, epochs):
    recipe = recipes.tier_for(rows)
    assert recipe.name == tier and recipe.epochs_for(rows) == epochs
    steps = epochs * -(-rows // recipe.batch_size)
    assert steps >= recipe.min_steps or epochs == recipe.max_epochs


def test_smaller_sets_get_lower_learning_rates_and_ten_percent_warmup():
    lrs = [recipes.RECIPES[name].learning_rate for name in recipes.TIERS]
    assert lrs == sorted(lrs)
    assert all(recipes.RECIPES[name].warmup_ratio == 0.10 for name in recipes.TIERS)


@pytest.mark.parametrize(("lengths", "seq"), [([10] * 99 + [12], 32), (list(range(1, 84)), 96), ([300] * 10, 128)])
def test_length_is_p99_rounded_to_16_within_32_and_128(lengths, seq):
    assert recipes.seq_len_from_lengths(lengths) == seq


def test_registry_refuses_a_second_recipe_of_a_name_and_unknown_presets(builtin_small, tiny_teacher):
    with pytest.raises(ConfigError, match="already registered"):
        recipes.register(recipes.RECIPES["fast"])
    with pytest.raises(ConfigError, match="unknown teacher preset 'nope'"):
        recipes.resolve("nope", builtin_small[0], None)


def test_teacher_config_resolves_auto_for_a_task_and_applies_overrides(builtin_small, tiny_teacher):
    from kdnas_deploy.distill.finetune import teacher_config

    task = builtin_small[0]
    config, doc = teacher_config(task, tiny_teacher, "auto")
    rows = len(task.load_split("train"))
    assert doc["recipe"] == recipes.tier_for(rows).name and doc["train_rows"] == rows
    assert config.max_seq_len == doc["length"]["max_seq_len"] and 32 <= config.max_seq_len <= 128
    assert doc["length"]["lengths"]["count"] == rows
    fixed, doc = teacher_config(task, tiny_teacher, "default", epochs=1.5, learning_rate=None)
    assert (fixed.epochs, fixed.max_seq_len, fixed.learning_rate) == (1.5, 128, 5e-5)
    assert doc["overrides"] == {"epochs": 1.5}
    json.dumps(doc)


def test_cli_offers_every_registered_preset():
    from kdnas_deploy.cli.distill import finetune

    opt = next(p for p in finetune.params if p.name == "preset")
    assert list(opt.type.choices) == recipes.preset_names() and opt.default == "auto"


@pytest.mark.parametrize(("hidden", "scale"), [(768, 1.0), (384, 2.0), (256, 3.0), (1024, 0.75), (64, 4.0),
                                               (4096, 0.5), (None, 1.0)])  # fmt: skip
def test_tier_learning_rates_scale_inversely_with_width_within_bounds(hidden, scale):
    tier = recipes.RECIPES["glue-small"]
    assert tier.settings(3_668, 96, hidden)["learning_rate"] == pytest.approx(tier.learning_rate * scale)
    fixed = recipes.RECIPES["default"]
    assert fixed.settings(3_668, 96, hidden)["learning_rate"] == fixed.learning_rate


def test_teacher_config_reads_the_models_width(builtin_small, tiny_teacher):
    from transformers import AutoConfig

    from kdnas_deploy.distill.finetune import teacher_config

    hidden = AutoConfig.from_pretrained(str(tiny_teacher)).hidden_size
    config, doc = teacher_config(builtin_small[0], tiny_teacher, "glue-small")
    assert doc["hidden_size"] == hidden
    assert config.learning_rate == pytest.approx(3e-5 * recipes.width_scale(hidden))
