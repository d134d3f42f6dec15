"""irv2 evaluate: every image counted (padded last batch), numbers equal a plain forward over
preprocess_image, config from the run folder, JSON out, clear errors."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from support.training import VAL_PER_CLASS, smoke_config

from irv2_core.cli import main
from irv2_core.config import save_config
from irv2_core.errors import Irv2Error
from irv2_core.evaluation import MAX_MISCLASSIFIED, evaluate, topk_metrics
from irv2_core.models.ckpt_io import read_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, smoke_mindrecord):
    """Data plus a run folder holding config.yaml and a (seeded, untrained) final.ckpt."""
    import mindspore as ms

    from irv2_core.models.factory import create_model

    root = tmp_path_factory.mktemp("eval")
    data = smoke_mindrecord
    cfg = smoke_config(num_classes=3)
    save_config(cfg, root / "run")
    ms.set_seed(7)
    net = create_model(cfg.model, num_classes=3, drop_rate=0.0)
    ms.save_checkpoint(net, str(root / "run" / "final.ckpt"))
    return data, root / "run" / "final.ckpt"


def test_topk_metrics_by_hand():
    logits = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 3.0], [0.0, 0.0, 5.0]])
    got = topk_metrics(logits, np.array([1, 1, 0]))
    assert (got["correct1"], got["correct5"], got["count"]) == (1.0, 3.0, 3.0)  # K=3 < 5
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert got["loss_sum"] == pytest.approx(-(logp[0, 1] + logp[1, 1] + logp[2, 0]))


def test_evaluate_counts_every_image_and_matches_a_plain_forward(run, tmp_path):
    import mindspore as ms

    from irv2_core.data.transforms import preprocess_image
    from irv2_core.models.factory import create_model

    data, ckpt = run
    result = evaluate(ckpt, data, out=tmp_path / "eval.json")  # config.yaml beside the ckpt
    assert result.count == 3 * VAL_PER_CLASS  # batches of 4, 4 and a padded 1
    assert (result.protocol, result.image_size) == ("zoo", 75)
    assert json.loads((tmp_path / "eval.json").read_text()) == result.file_content()
    # reference: the val JPEGs through preprocess_image, one batch, same weights
    files = sorted((data.parent / "images" / "val").glob("class_*/*.jpg"))
    labels = np.array([int(f.parent.name[-1]) for f in files])
    images = np.stack([preprocess_image(f, "zoo", 75) for f in files])
    net = create_model("inception_resnet_v2", num_classes=3, drop_rate=0.0)
    ms.load_param_into_net(net, read_checkpoint(ckpt))
    net.set_train(False)
    ref = topk_metrics(net(ms.Tensor(images)).asnumpy(), labels)
    assert result.top1 == pytest.approx(ref["correct1"] / len(files))
    assert result.loss == pytest.approx(ref["loss_sum"] / len(files), rel=1e-4)
    # the confusion matrix counts every image once; its diagonal is the top-1 hits
    confusion = np.array(result.confusion)
    assert confusion.shape == (3, 3) and confusion.sum() == result.count
    assert np.trace(confusion) / confusion.sum() == pytest.approx(result.top1)
    assert confusion.sum(axis=1).tolist() == [VAL_PER_CLASS] * 3  # rows are the true classes
    assert result.classes == ["class_0", "class_1", "class_2"]
    wrong = result.count - int(np.trace(confusion))
    assert wrong > 0  # an untrained, seeded net: the samples below are really checked
    assert len(result.misclassified) == min(wrong, MAX_MISCLASSIFIED)
    val_files = {f.relative_to(data.parent / "images").as_posix() for f in files}
    for sample in result.misclassified:
        assert sample.label != sample.pred and confusion[sample.label][sample.pred] > 0
        # the name is the MindRecord's file_name of that image, its true class folder's
        assert sample.file_name is not None and f"class_{sample.label}/" in sample.file_name
        assert any(v.endswith(sample.file_name) or sample.file_name.endswith(v) for v in val_files)
        head, payload = sample.thumbnail.split(",", 1)
        assert head == "data:image/jpeg;base64"
        assert base64.b64decode(payload)[:2] == b"\xff\xd8"


def test_evaluate_cli_prints_and_writes_json(run, tmp_path, capsys):
    data, ckpt = run
    out = tmp_path / "r.json"
    assert main(["evaluate", "--data", str(data), "--ckpt", str(ckpt), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text()) and printed["count"] == 9


def test_evaluate_errors_are_clear(run, tmp_path):
    import mindspore as ms

    from irv2_core.models.factory import create_model

    data, _ = run
    with pytest.raises(Irv2Error, match="checkpoint not found"):
        evaluate(tmp_path / "missing.ckpt", data)
    five = tmp_path / "five.ckpt"
    ms.save_checkpoint(create_model("inception_resnet_v2", num_classes=5), str(five))
    with pytest.raises(Irv2Error, match=r"does not fit.*\(3, 1536\).*\(5, 1536\).*needs a 3-class"):
        evaluate(five, data, cfg=smoke_config())


def test_report_compares_two_real_evaluations(run, tmp_path):
    """Two checkpoints evaluated for real: the report's deltas and per-class changes are theirs,
    and the misclassified strip is drawn from the thumbnails evaluate kept."""
    import mindspore as ms

    from irv2_core.models.factory import create_model
    from irv2_core.report import artifact_markdown, build_report, per_class_table

    data, ckpt = run
    ms.set_seed(8)
    older = tmp_path / "older.ckpt"
    net = create_model("inception_resnet_v2", num_classes=3, drop_rate=0.0)
    ms.save_checkpoint(net, str(older))
    now = evaluate(ckpt, data)
    before = evaluate(older, data, cfg=smoke_config(num_classes=3))
    assert np.array(before.confusion).sum() == before.count == now.count

    result = build_report(
        ckpt.parent,
        tmp_path / "report",
        extra={"evaluation": now.to_json()},
        baseline=before,
        baseline_label="seed 8",
    )
    deltas = {row["metric"]: row for row in result.tables["comparison"]}
    assert deltas["top1 (%)"]["Δ"] == pytest.approx(
        round(100 * now.top1, 2) - round(100 * before.top1, 2)
    )
    recall_now = per_class_table(now.confusion)["recall (%)"]
    recall_before = per_class_table(before.confusion)["recall (%)"]
    changes = [row["Δ recall"] for row in result.tables["per_class_changes"]]
    assert changes == pytest.approx((recall_now - recall_before).tolist())
    assert "Against the previous accepted model: seed 8." in artifact_markdown(result)
    assert any(p.endswith("misclassified.png") for p in result.plots)
