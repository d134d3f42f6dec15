"""predict: top-k class names and probabilities from a checkpoint, via the eval preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.images import make_image

import irv2_core  # noqa: F401  (oneDNN setting before any op)
from irv2_core.cli import main
from irv2_core.errors import Irv2Error
from irv2_core.export.predict import predict

CLASSES = {"cat": 0, "dog": 1, "fox": 2}


pytestmark = pytest.mark.usefixtures("pynative_mode")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run-folder lookalike: final.ckpt (3 classes) with classes.json beside it."""
    from irv2_core.models.factory import create_model
    from irv2_core.models.weights import save_checkpoint_atomic

    d = tmp_path_factory.mktemp("run")
    save_checkpoint_atomic(create_model(num_classes=3), d / "final.ckpt")
    (d / "classes.json").write_text(json.dumps(CLASSES))
    rng = np.random.default_rng(0)
    for i in range(2):
        make_image(i, rng, size=(90, 80)).save(d / f"img{i}.jpg", quality=90)
    return d


def test_ckpt_prediction_is_softmax_of_the_network_on_eval_inputs(run_dir):
    import mindspore as ms

    from irv2_core.data.transforms import preprocess_image
    from irv2_core.models.weights import load_model

    images = [run_dir / "img0.jpg", run_dir / "img1.jpg"]
    results = predict(run_dir / "final.ckpt", images, top_k=2, image_size=75)
    net, _ = load_model(run_dir / "final.ckpt")
    x = np.stack([preprocess_image(p, "zoo", 75) for p in images])
    logits = net(ms.Tensor(x)).asnumpy().astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    names = {v: k for k, v in CLASSES.items()}
    for item, image, row in zip(results, images, probs, strict=True):
        assert item["image"] == str(image)
        best = np.argsort(-row)[:2]
        assert [e["index"] for e in item["top"]] == best.tolist()
        assert [e["name"] for e in item["top"]] == [names[i] for i in best]  # sibling classes.json
        np.testing.assert_allclose([e["probability"] for e in item["top"]], row[best], rtol=1e-5)


def test_cli_prints_names_and_probabilities(run_dir, capsys):
    argv = ["predict", "--model", str(run_dir / "final.ckpt"), str(run_dir / "img1.jpg")]
    assert main([*argv, "--image-size", "75", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(run_dir / "img1.jpg")
    probs = [float(line.split()[0]) for line in lines[1:]]
    assert sorted(line.split()[1] for line in lines[1:]) == sorted(CLASSES)
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1.0) < 1e-3


def test_classes_file_of_another_model_is_refused(run_dir, tmp_path):
    (tmp_path / "five.json").write_text(json.dumps({f"c{i}": i for i in range(5)}))
    with pytest.raises(Irv2Error, match="lists 5 classes but .* outputs 3"):
        predict(run_dir / "final.ckpt", [run_dir / "img0.jpg"], tmp_path / "five.json", 1, 75)


def test_bad_model_and_image_inputs_are_clear_errors(run_dir, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(Irv2Error, match=r"unknown model type '\.pt'.*\.ckpt, \.mindir, \.onnx"):
        predict(tmp_path / "model.pt", [run_dir / "img0.jpg"], image_size=75)
    with pytest.raises(Irv2Error, match="cannot read image"):
        predict(run_dir / "final.ckpt", [tmp_path / "nope.jpg"], image_size=75)
    with pytest.raises(Irv2Error, match="at least 75x75"):
        predict(run_dir / "final.ckpt", [run_dir / "img0.jpg"], image_size=60)


def test_an_exports_recorded_contract_decides_protocol_and_size(tmp_path):
    """Issue 12: predict takes the protocol and size an export recorded beside it, refuses
    flags that disagree, and treats an export without a record as the old float contract."""
    from irv2_core.export.exporter import contract_path, input_contract
    from irv2_core.export.predict import _resolve_input

    model = tmp_path / "m.mindir"
    model.write_bytes(b"not run here")
    assert _resolve_input(model, None, None) == ("zoo", 299, False)  # pre-contract export
    assert _resolve_input(model, "inception", 75) == ("inception", 75, False)
    contract = input_contract("inception", 107, "MINDIR")
    assert contract["dtype"] == "uint8" and contract["shape"] == [None, 3, 107, 107]
    contract_path(model).write_text(json.dumps(contract))
    assert _resolve_input(model, None, None) == ("inception", 107, True)
    assert _resolve_input(model, "inception", 107) == ("inception", 107, True)
    with pytest.raises(Irv2Error, match="exported for protocol 'inception'.*omit --protocol"):
        _resolve_input(model, "zoo", None)
    with pytest.raises(Irv2Error, match="takes 107x107 inputs.*omit --image-size"):
        predict(model, [tmp_path / "x.jpg"], image_size=75)


def test_a_checkpoint_uses_its_runs_protocol(run_dir, tmp_path):
    from irv2_core.export.predict import _resolve_input

    ckpt = tmp_path / "final.ckpt"
    ckpt.write_bytes((run_dir / "final.ckpt").read_bytes())
    assert _resolve_input(ckpt, None, 75) == ("zoo", 75, True)
    (tmp_path / "config.yaml").write_text("eval_protocol: inception\n")
    assert _resolve_input(ckpt, None, None) == ("inception", 299, True)
