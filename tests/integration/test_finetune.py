"""Fine-tuning from ``pretrained:`` and the ``inception`` eval protocol (README, the ``finetune``
preset): training starts from another checkpoint's backbone with a new classifier of the data's
width, and evaluation normalises with mean = std = 0.5 (what timm's weights expect)."""

from __future__ import annotations

import numpy as np
import pytest
from support.training import VAL_PER_CLASS, smoke_config

from irv2_core.evaluation import evaluate, topk_metrics
from irv2_core.models.ckpt_io import read_checkpoint
from irv2_core.training.train import train

pytestmark = pytest.mark.slow

PRETRAINED_CLASSES, PRETRAINED_SEED = 5, 12345  # another head width, weights unlike seed 1's
LOSS_REL = 1e-4  # evaluate against a plain forward, as in test_evaluate


def _conv_weights(params: dict) -> np.ndarray:
    """Every conv kernel of a checkpoint's backbone, flattened in name order."""
    names = sorted(k for k, v in params.items() if k.endswith(".weight") and len(v.shape) == 4)
    return np.concatenate([params[k].asnumpy().ravel() for k in names])


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, smoke_mindrecord):
    """A 5-class "pretrained" checkpoint and a 3-class run fine-tuned from it for 2 steps with
    the inception protocol; (data, pretrained path, run folder)."""
    import mindspore as ms

    from irv2_core.models.factory import create_model

    root = tmp_path_factory.mktemp("finetune")
    data = smoke_mindrecord
    ms.set_seed(PRETRAINED_SEED)
    pretrained = root / "pretrained.ckpt"
    ms.save_checkpoint(create_model(num_classes=PRETRAINED_CLASSES), str(pretrained))
    cfg = smoke_config(
        pretrained=str(pretrained), eval_protocol="inception", epoch_size=1, eval_every_epochs=0
    )
    train(cfg, data, root / "run")
    return data, pretrained, root / "run"


def test_training_starts_from_the_pretrained_backbone_with_a_new_head(finetuned):
    _, pretrained, run = finetuned
    before = read_checkpoint(pretrained)
    after = read_checkpoint(run / "final.ckpt")
    assert tuple(before["classif.weight"].shape) == (PRETRAINED_CLASSES, 1536)
    assert tuple(after["classif.weight"].shape) == (3, 1536)  # the data's 3 classes
    assert tuple(after["classif.bias"].shape) == (3,)
    # 2 small steps away from the pretrained kernels, nothing like a fresh init (seed 1)
    start, end = _conv_weights(before), _conv_weights(after)
    assert np.corrcoef(start, end)[0, 1] > 0.99
    assert 0 < np.abs(end - start).max() < 0.05  # it did train


def test_evaluation_normalises_with_the_inception_mean_and_std(finetuned):
    """evaluate reads the run's eval_protocol: its loss is the one of the val images resized by
    the inception protocol and normalised by hand as (x/255 - 0.5)/0.5 through the network's
    float input, and clearly not the one of the zoo's ImageNet mean/std."""
    import mindspore as ms

    from irv2_core.data.transforms import preprocess_image
    from irv2_core.models.factory import create_model
    from irv2_core.runtime.context import pynative_mode

    data, _, run = finetuned
    result = evaluate(run / "final.ckpt", data)  # config.yaml beside the checkpoint
    assert (result.protocol, result.count) == ("inception", 3 * VAL_PER_CLASS)
    files = sorted((data.parent / "images" / "val").glob("class_*/*.jpg"))
    labels = np.array([int(f.parent.name[-1]) for f in files])
    pixels = np.stack([preprocess_image(f, "inception", 75) for f in files]).astype(np.float32)
    net = create_model(num_classes=3, drop_rate=0.0, input_protocol=None)  # float input
    ms.load_param_into_net(net, read_checkpoint(run / "final.ckpt"))
    net.set_train(False)

    def loss(mean, std) -> float:
        mean = np.array(mean, np.float32).reshape(1, 3, 1, 1)
        std = np.array(std, np.float32).reshape(1, 3, 1, 1)
        logits = net(ms.Tensor((pixels / 255.0 - mean) / std)).asnumpy()
        return topk_metrics(logits, labels)["loss_sum"] / len(files)

    with pynative_mode():  # two one-shot forwards: no graph to compile
        inception = loss((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        zoo = loss((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert result.loss == pytest.approx(inception, rel=LOSS_REL)
    # near chance both losses are close to ln 3: the check can still tell them apart
    assert abs(zoo - inception) > 20 * LOSS_REL * inception, (zoo, inception)
