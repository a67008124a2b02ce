from pathlib import Path

import pytest

from dermdx.config import RunConfig, load_config, save_config

# Anchored to the repository, so the config tests do not silently collect nothing from another folder.
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_example_config_loads_and_round_trips(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "ham10000_lite0.yaml")
    assert config.model.name == "tf_efficientnet_lite0"
    assert config.preprocess.mean == (0.5, 0.5, 0.5)
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_overrides_are_typed(tmp_path: Path) -> None:
    save_config(RunConfig(), tmp_path / "c.yaml")
    config = load_config(tmp_path / "c.yaml", ["train.epochs=3", "data.limit=50", "split.file=null"])
    assert config.train.epochs == 3 and config.data.limit == 50 and config.split.file is None


def test_unknown_option_suggests_the_close_name(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("train:\n  epochz: 3\n")
    with pytest.raises(ValueError, match="unknown option 'epochz'; did you mean 'epochs'"):
        load_config(tmp_path / "c.yaml")


def test_bad_choice_lists_allowed_values(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("train:\n  imbalance: oversample\n")
    with pytest.raises(ValueError, match="'oversample' is not one of 'none', 'sampler'"):
        load_config(tmp_path / "c.yaml")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    """A typo in a config in the repo would only surface hours into someone's training run."""
    config = load_config(path)
    assert config.output_dir.startswith("runs/")
    assert config.train.epochs >= 1


def test_ensemble_member_configs_share_classes_and_split() -> None:
    """The default classifier averages its members' probabilities, and releases are compared on
    paired held-out rows: the configs must agree on the class order and on which rows were held
    out, or the figures would be leaky or unpaired."""
    paths = sorted(CONFIGS.glob("default_fusion_*.yaml")) + sorted(CONFIGS.glob("long_fusion_*.yaml"))
    members = [load_config(p) for p in paths]
    assert len(members) >= 2
    first = members[0]
    for config in members[1:]:
        assert config.data.classes == first.data.classes
        assert config.split == first.split
