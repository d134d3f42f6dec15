"""import-weights: numpy safetensors reading, timm key mapping, and logits equal to real timm's.

The timm logits were computed by real timm (tests/data/make_timm_reference.py, run in a scratch
venv with torch) for weights that numpy regenerates here bit-for-bit.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import irv2_core  # noqa: F401  (oneDNN setting before any op)
from irv2_core.cli import main
from irv2_core.errors import Irv2Error
from irv2_core.models.ckpt_io import read_checkpoint
from irv2_core.models.safetensors_io import read_safetensors, write_safetensors
from irv2_core.models.weights import import_timm_weights, load_model, timm_to_ms_name
from irv2_core.runtime.context import compile_cache_disabled
from irv2_core.runtime.io import sha256_file

DATA = Path(__file__).resolve().parents[1] / "data"


def _load_ref_module():
    spec = importlib.util.spec_from_file_location(
        "make_timm_reference", DATA / "make_timm_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _load_ref_module()


pytestmark = pytest.mark.usefixtures("pynative_mode")


@pytest.fixture(scope="module")
def reference():
    return REF.load_reference()


@pytest.fixture(scope="module")
def timm_file(reference, tmp_path_factory) -> Path:
    """The deterministic timm-layout weights as a safetensors file (223 MB, written once)."""
    path = tmp_path_factory.mktemp("timm") / "irv2_timm.safetensors"
    write_safetensors(REF.make_state_dict(reference["keys_shapes"]), path)
    return path


@pytest.fixture(scope="module")
def imported_ckpt(timm_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "timm.ckpt"
    return out, import_timm_weights(timm_file, out)


def test_import_summary_describes_the_written_checkpoint(imported_ckpt):
    out, result = imported_ckpt
    assert result["tensors"] == 1102 and result["dropped"] == [] and result["residual_bias"]
    assert result["protocol"] == "inception" and "recorded input protocol" in result["message"]
    assert result["num_classes"] == result["source_num_classes"] == 1000
    assert result["sha256"] == sha256_file(out) and result["bytes"] == out.stat().st_size


def test_reader_matches_the_reference_safetensors_writer_for_f32_f16_bf16():
    got = read_safetensors(DATA / "safetensors_dtypes.safetensors")
    np.testing.assert_array_equal(got["f32"], np.arange(6, dtype=np.float32).reshape(2, 3) / 8)
    assert got["f16"].dtype == np.float16
    np.testing.assert_array_equal(got["f16"], [[0.5, -1.25], [3.0, 65504.0]])
    assert got["bf16"].dtype == np.float32  # widened: numpy has no bfloat16
    np.testing.assert_array_equal(got["bf16"], [1.5, -2.25, 3.0, 0.0078125, -256.0])


def test_writer_output_is_read_back_by_the_safetensors_library(tmp_path):
    from safetensors.numpy import load_file

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float16)}
    write_safetensors(arrays, tmp_path / "x.safetensors")
    back = load_file(str(tmp_path / "x.safetensors"))
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == value.dtype


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    write_safetensors({"w": np.ones((64, 64), np.float32)}, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(Irv2Error, match=r"cut\.safetensors.*'w'.*truncated"):
        read_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(Irv2Error, match="not a valid safetensors file.*safetensors.torch"):
        read_safetensors(tmp_path / "junk.safetensors")


def test_every_timm_key_maps_one_to_one_onto_our_parameters(reference):
    from irv2_core.models.factory import create_model

    ours = {p.name: tuple(p.shape) for p in create_model().get_parameters()}
    mapped = {}
    for key, shape in reference["keys_shapes"]:
        name = timm_to_ms_name(key)
        if name is None:
            assert key.endswith("num_batches_tracked"), key
            continue
        assert name not in mapped, f"two timm keys map onto {name}"
        mapped[name] = tuple(shape)
    assert mapped == ours  # same names, same shapes, nothing left over on either side
    assert reference["meta"]["params"] == 55_843_464


# 299 px (the zoo's size) is the slow one: a few seconds of PyNative forward on 2 cores
@pytest.mark.parametrize("size", [75, pytest.param(299, marks=pytest.mark.slow)])
def test_imported_weights_give_timm_logits(imported_ckpt, reference, size):
    import mindspore as ms

    # timm's contract: normalised float32 straight into the trunk (no pixel normalisation)
    net, info = load_model(imported_ckpt[0], input_protocol=None)
    assert info == {"checkpoint": str(imported_ckpt[0]), "num_classes": 1000, "residual_bias": True}
    x = REF.make_inputs()[size]
    with compile_cache_disabled():  # in GRAPH mode a stale cache could swap graphs
        ours = net(ms.Tensor(x)).asnumpy()
    theirs = reference["logits"][size]
    # the README's promise, measured as it states it: max |diff| / max |logit| within 1e-6
    # (measured 8.8e-7 at 75 px, 4.8e-7 at 299 px, the same in every run)
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert rel <= 1e-6, f"{size} px: max relative error {rel:.2e}"
    assert (ours.argmax(1) == theirs.argmax(1)).all()


def test_cli_new_num_classes_drops_the_classifier_and_keeps_the_rest(timm_file, capsys, tmp_path):
    out = tmp_path / "ft.ckpt"
    assert main(["import-weights", str(timm_file), "--out", str(out), "--num-classes", "5"]) == 0
    assert "dropped classif.bias, classif.weight" in capsys.readouterr().out
    params = read_checkpoint(out)
    assert tuple(params["classif.weight"].shape) == (5, 1536)
    source = read_safetensors(timm_file)
    np.testing.assert_array_equal(
        params["conv2d_1a.bn.moving_variance"].asnumpy(), source["conv2d_1a.bn.running_var"]
    )
    np.testing.assert_array_equal(
        params["repeat_2.3.conv2d.weight"].asnumpy(), source["repeat_2.3.conv2d.weight"]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["ft.ckpt"]  # no temp files left behind


def test_wrong_keys_and_shapes_are_named_and_nothing_is_written(timm_file, capsys, tmp_path):
    state = read_safetensors(timm_file)
    del state["mixed_6a.branch0.bn.running_mean"]
    state["repeat.4.conv2d.weight"] = np.zeros((320, 64, 1, 1), np.float32)
    state["aux_logits.fc.weight"] = np.zeros((2, 2), np.float32)
    write_safetensors(state, tmp_path / "bad.safetensors")
    out = tmp_path / "bad.ckpt"
    assert main(["import-weights", str(tmp_path / "bad.safetensors"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing keys: mixed_6a.branch0.bn.moving_mean" in err
    assert "unexpected keys: aux_logits.fc.weight" in err
    assert "repeat.4.conv2d.weight (320, 64, 1, 1) != (320, 128, 1, 1)" in err
    assert not out.exists()


def test_load_model_refuses_a_mismatched_class_count(imported_ckpt):
    with pytest.raises(Irv2Error, match="1000-class classifier but num_classes=10"):
        load_model(imported_ckpt[0], num_classes=10)


def test_a_parameter_given_twice_is_refused(tmp_path):
    one = np.ones(4, np.float32)
    write_safetensors({"x.bn.weight": one, "x.bn.gamma": one}, tmp_path / "dup.safetensors")
    with pytest.raises(Irv2Error, match="two tensors for parameter 'x.bn.gamma'"):
        import_timm_weights(tmp_path / "dup.safetensors", tmp_path / "dup.ckpt")
    assert not (tmp_path / "dup.ckpt").exists()


@pytest.mark.slow  # one MINDIR export of the 1000-class network: ~25 s on 2 cores
def test_export_of_imported_timm_weights_feeds_them_timms_mean_and_std(imported_ckpt, tmp_path):
    """The user's bug: an export of import-weights' output (no run folder around it) used the
    zoo's mean/std, 2.2 (relative) away from timm's logits. The checkpoint records `inception`,
    so the export normalises uint8 pixels as timm's weights expect: (x/255 - 0.5) / 0.5."""
    import mindspore as ms
    from mindspore import nn

    from irv2_core.export.exporter import export_model, verification_input

    record = export_model(imported_ckpt[0], "MINDIR", tmp_path / "timm", image_size=75)
    assert record.input_contract["protocol"] == "inception"
    assert record.input_contract["mean"] == record.input_contract["std"] == [0.5, 0.5, 0.5]
    pixels = verification_input(75)
    exported = nn.GraphCell(ms.load(record.path))(ms.Tensor(pixels)).asnumpy()
    timm_net, _ = load_model(imported_ckpt[0], input_protocol=None)  # timm's own contract
    with compile_cache_disabled():
        timm = timm_net(ms.Tensor((pixels / 255.0 - 0.5) / 0.5, ms.float32)).asnumpy()
    assert np.abs(exported - timm).max() / np.abs(timm).max() <= 1e-5


def test_export_with_a_protocol_the_weights_do_not_expect_is_refused(imported_ckpt, capsys):
    out = imported_ckpt[0].parent / "zoo.mindir"
    argv = ["export", "--ckpt", str(imported_ckpt[0]), "--out", str(out), "--protocol", "zoo"]
    assert main([*argv, "--image-size", "75"]) == 2
    err = capsys.readouterr().err
    assert "were trained with the 'inception' input protocol" in err
    assert "--protocol 'zoo'" in err and "Omit --protocol" in err
    assert not out.exists() and not out.with_name("zoo.mindir.json").exists()
