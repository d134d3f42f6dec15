"""Config presets against the seed recipe, and bad values failing before any work."""

from __future__ import annotations

import pytest
import yaml

from irv2_core.cli import main
from irv2_core.config import PRESETS, ConfigError, load_config, parse_overrides, save_config

# research/cv/inception_resnet_v2/src/config.py of the model zoo (config_ascend / config_gpu)
SEED_ASCEND = dict(
    is_save_on_master=False, batch_size=128, epoch_size=250, num_classes=1000, work_nums=8,
    loss_scale=1024, smooth_factor=0.1, weight_decay=4e-5, optim="rmsprop", momentum=0.9,
    amp_level="O3", decay=0.9, epsilon=1.0, keep_checkpoint_max=10, save_checkpoint_epochs=10,
    lr_init=4e-5, lr_end=4e-6, lr_max=0.4, warmup_epochs=1, start_epoch=1, device_target="Ascend",
)  # fmt: skip
SEED_GPU = dict(
    SEED_ASCEND, epoch_size=100, weight_decay=1e-5, optim="momentum", amp_level="O2",
    save_checkpoint_epochs=1, lr_init=1e-4, lr_max=1.0, warmup_epochs=2, device_target="GPU",
)  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "seed"), [("zoo-ascend-8p", SEED_ASCEND), ("zoo-gpu", SEED_GPU)]
)
def test_zoo_presets_hold_the_seed_values_exactly(preset, seed):
    cfg = load_config(preset).to_dict()
    assert {k: cfg[k] for k in seed} == seed
    assert cfg["image_size"] == 299 and cfg["eval_protocol"] == "zoo"


def test_smoke_and_finetune_presets():
    smoke = load_config("cpu-smoke")
    assert (smoke.image_size, smoke.device_target, smoke.amp_level) == (75, "CPU", "O0")
    assert smoke.loss_scale_type == "fixed" and smoke.num_classes is None
    tune = load_config("finetune")
    assert tune.eval_protocol == "inception" and tune.num_classes is None
    assert tune.lr_max < SEED_GPU["lr_max"] / 10
    assert set(PRESETS) == {"zoo-ascend-8p", "zoo-gpu", "finetune", "cpu", "cpu-smoke"}


def test_cpu_preset_is_a_valid_cpu_training_config():
    cfg = load_config("cpu")
    assert (cfg.device_target, cfg.amp_level, cfg.image_size) == ("CPU", "O0", 75)
    assert cfg.loss_scale_type == "fixed" and cfg.loss_scale == 1.0  # fp32: no scaling needed
    assert cfg.max_steps_per_epoch is None and cfg.num_classes is None  # whole epochs, any data
    assert 1 <= cfg.epoch_size <= 5 and cfg.warmup_epochs < cfg.epoch_size
    assert cfg.lr_max <= 0.005  # 0.01 diverged from scratch at 75 px (bench/cpu_preset_learning)
    assert cfg.save_checkpoint_epochs <= cfg.epoch_size  # a resumable checkpoint at the latest end
    smoke = load_config("cpu-smoke")
    assert smoke.max_steps_per_epoch is not None and smoke.lr_max <= cfg.lr_max  # few sane steps


def test_cpu_deployments_use_the_cpu_preset():
    from deployments import load_deployment_specs

    presets = {s["name"]: s["parameters"].get("preset") for s in load_deployment_specs()
               if "parameters" in s}  # fmt: skip
    assert presets["local"] == presets["nightly-retrain"] == "cpu"


def test_yaml_file_then_overrides_win(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump({"batch_size": 16, "lr_max": 0.1}))
    cfg = load_config("cpu-smoke", path, parse_overrides(["lr_max=0.05", "num_classes=null"]))
    assert (cfg.batch_size, cfg.lr_max, cfg.num_classes, cfg.image_size) == (16, 0.05, None, 75)
    saved = save_config(cfg, tmp_path / "run")
    assert load_config(path=saved) == cfg


@pytest.mark.parametrize(
    ("overrides", "field", "detail"),
    [
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"image_size": 74}, "image_size", "75"),
        ({"amp_level": "O5"}, "amp_level", "'O0', 'O1', 'O2' or 'O3'"),
        ({"lr_init": 1.0}, "lr_init", "must not exceed lr_max"),
        ({"loss_scale_type": "dynamic"}, "loss_scale_type", "supported on CPU: fixed"),
        ({"learning_rate": 0.1}, "learning_rate", "known keys:"),
    ],
)
def test_bad_values_name_the_field(overrides, field, detail):
    with pytest.raises(ConfigError) as err:
        load_config("cpu-smoke", overrides=overrides)
    assert field in str(err.value) and detail in str(err.value)


def test_bad_set_syntax_and_unknown_preset():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["batch_size"])
    with pytest.raises(ConfigError, match="choose one of: zoo-ascend-8p"):
        load_config("zoo-tpu")


def test_train_cli_rejects_a_bad_value_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "nodata"), "--out", str(out), "--preset",
            "cpu-smoke", "--set", "batch_size=-3"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and "Traceback" not in err
    assert not out.exists()
