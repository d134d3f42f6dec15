"""Checkpoints carry the input protocol their weights expect: a run's final.ckpt records its
run's, and evaluate, predict and fine-tuning default to it and refuse another (issue 18)."""

from __future__ import annotations

import shutil

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from irv2_core.config import load_config
from irv2_core.errors import Irv2Error
from irv2_core.evaluation import with_weights_protocol
from irv2_core.export.predict import _resolve_input
from irv2_core.training.checkpoints import CheckpointStore
from irv2_core.training.distributed import DistInfo
from irv2_core.training.train import pretrained_protocol


class _Net(nn.Cell):  # the record does not depend on the network: a small real cell
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Dense(4, 2)

    def construct(self, x):
        return self.dense(x)


@pytest.fixture
def copied_final(tmp_path):
    """final.ckpt of an ``inception`` run, copied alone out of its run folder."""
    cfg = load_config("cpu-smoke", overrides={"eval_protocol": "inception"})
    final = CheckpointStore(tmp_path / "run", cfg, DistInfo(rank=0, size=1)).save_final(_Net())
    (tmp_path / "elsewhere").mkdir()
    return shutil.copy(final, tmp_path / "elsewhere" / "model.ckpt")


def test_a_final_ckpt_copied_out_of_its_run_keeps_the_runs_protocol(copied_final):
    assert _resolve_input(copied_final, None, None) == ("inception", 299, True)  # no config.yaml
    with pytest.raises(Irv2Error, match=r"trained with the 'inception'.*--protocol 'zoo'"):
        _resolve_input(copied_final, "zoo", None)
    weights = ms.load_checkpoint(str(copied_final))
    assert np.asarray(weights["dense.weight"].asnumpy()).shape == (2, 4)  # still loads as before


def test_evaluate_and_finetuning_default_to_the_recorded_protocol(copied_final):
    default = load_config("cpu-smoke")  # eval_protocol left at its default (zoo)
    assert with_weights_protocol(default, copied_final).eval_protocol == "inception"
    tune = load_config("cpu-smoke", overrides={"pretrained": str(copied_final)})
    assert pretrained_protocol(tune).eval_protocol == "inception"


def test_an_explicit_protocol_the_weights_were_not_trained_with_is_refused(copied_final):
    asked = load_config("cpu-smoke", overrides={"eval_protocol": "zoo"})
    message = r"trained with the 'inception'.*eval_protocol 'zoo'.*Omit eval_protocol"
    with pytest.raises(Irv2Error, match=message):
        with_weights_protocol(asked, copied_final)
    tune = load_config("cpu", overrides={"pretrained": str(copied_final), "eval_protocol": "zoo"})
    with pytest.raises(Irv2Error, match=message):
        pretrained_protocol(tune)
    agreed = load_config("finetune", overrides={"pretrained": str(copied_final)})
    assert pretrained_protocol(agreed).eval_protocol == "inception"


def test_a_checkpoint_without_a_record_keeps_the_old_defaults(tmp_path):
    from irv2_core.models.ckpt_io import save_checkpoint_atomic

    old = save_checkpoint_atomic(_Net(), tmp_path / "old.ckpt")  # as written before issue 18
    assert _resolve_input(old, None, None) == ("zoo", 299, True)
    assert _resolve_input(old, "inception", None) == ("inception", 299, True)
    asked = load_config("cpu-smoke", overrides={"eval_protocol": "inception"})
    assert with_weights_protocol(asked, old).eval_protocol == "inception"
