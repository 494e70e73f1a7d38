from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from tests.conftest import compose_cfg


def test_defaults_compose_to_the_embedded_model_on_sst2() -> None:
    cfg = compose_cfg("finetune", [])
    assert cfg.model.source == "embedded:minilm" and cfg.data.task == "sst2"
    assert cfg.data.max_length == 64 and cfg.train.lr == 5e-5


@pytest.mark.parametrize("override", ["train.lrr=1e-4", "data.max_len=64", "nonsense=1"])
def test_mistyped_override_fails_with_the_key(override: str) -> None:
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].split(".")[-1]):
        compose_cfg("finetune", [override])


def test_wrong_type_fails() -> None:
    with pytest.raises(ConfigCompositionException):
        compose_cfg("finetune", ["train.batch_size=big"])


def test_experiments_and_smoke_compose() -> None:
    mrpc = compose_cfg("finetune", ["experiment=mrpc_teacher"])
    assert mrpc.data.task == "mrpc" and mrpc.data.max_length == 128
    smoke = compose_cfg("finetune", ["debug=smoke"])
    assert smoke.model.source == "random" and smoke.data.max_train_examples == 256


def test_unknown_key_in_a_yaml_file_fails(tmp_path) -> None:
    from hydra import compose, initialize_config_dir
    from amqs.config import CONF_DIR, register_configs
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "typo.yaml").write_text("name: x\nsorce: random\n")
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ConfigKeyError), match="sorce"):
            compose("finetune", overrides=["model=typo"])
