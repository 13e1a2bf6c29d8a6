"""The pretrained backbones: their preprocessing, the --weights routes, the two fine-tuning phases and the
one-line errors. Nothing here touches the network: backbones are built with ``weights = "none"`` or from a
file the test writes, and the download test points Keras at a closed port on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.errors import SpaceError, StudyError, WeightsError
from tuning.evaluate import _TrainPlusVal
from tuning.models import build_model
from tuning.models.backbones import (
    BACKBONES,
    CaffePreprocess,
    backbone_of,
    check_study_weights,
    check_weights,
    unfreeze,
    weights_dir,
)
from tuning.space import SearchSpace, load_space
from tuning.train import TrialData, train_trial

N_CLASSES = 3
SIZE = 32  # the smallest input keras.applications builds


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)


def _params(space: SearchSpace, **chosen: Any) -> dict[str, Any]:
    params = space.resolve({"weights": "none", "image_size": SIZE, "dense_units": 128, **chosen})
    return {**params, "augmentation": space.augmentation_for(params)}


def _backbone_weights(model: Any) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in backbone_of(model).layers
            if layer.weights}


def _saved_backbone(tmp_path: Path, model: str, *, seed: int = 1) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """A weights file of ``model``'s backbone (as a user would fetch it) with values no fresh build has."""
    net = build_model(model, _params(load_space(model)), (SIZE, SIZE, 3), N_CLASSES)
    backbone = backbone_of(net)
    rng = np.random.default_rng(seed)
    backbone.set_weights([rng.normal(0, 0.05, w.shape).astype(w.dtype) + (1.0 if "variance" in w.path else 0.0)
                          for w in backbone.weights])  # BatchNorm variances stay positive
    path = tmp_path / f"{model}.weights.h5"
    backbone.save_weights(path)
    return path, _backbone_weights(net)


# ----- structure ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(BACKBONES))
def test_each_backbone_takes_raw_rgb_and_brings_its_own_preprocessing(model: str) -> None:
    space = load_space(model)
    assert space.model == model and space.base["weights"] == "imagenet"
    net = build_model(model, _params(space, flip=True, augmentation="small"), (SIZE, SIZE, 3), N_CLASSES)
    assert net.input_shape == (None, SIZE, SIZE, 3) and net.output_shape == (None, N_CLASSES)
    names = [layer.name for layer in net.layers]
    assert names[0] == "image" and names[-1] == "predictions" and "gap" in names and "aug_flip" in names
    backbone = backbone_of(net)
    assert backbone is not None and not backbone.trainable  # built frozen: phase 1 trains the head
    inner = [type(layer).__name__ for layer in backbone.layers]
    if model == "vgg16_imagenet":
        assert "caffe_preprocess" in names and "Rescaling" not in inner
        assert sum(name == "Conv2D" for name in inner) == 13  # the real VGG16, not the study's 12
    else:
        assert "caffe_preprocess" not in names and "Rescaling" in inner  # include_preprocessing
        assert "BatchNormalization" in inner
    # The backbone is called in inference mode, so a frozen BatchNorm normalises with its moving statistics.
    node = net.get_layer(backbone.name)._inbound_nodes[0]
    assert node.arguments.kwargs.get("training") is False


def test_caffe_preprocessing_swaps_to_bgr_and_subtracts_the_imagenet_mean() -> None:
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], dtype="float32")  # R, G, B
    out = np.array(CaffePreprocess()(pixel))
    np.testing.assert_allclose(out[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


@pytest.mark.parametrize("model", sorted(BACKBONES))
def test_unfreeze_opens_the_top_block_half_or_all_but_never_batchnorm(model: str) -> None:
    net = build_model(model, _params(load_space(model)), (SIZE, SIZE, 3), N_CLASSES)
    backbone = backbone_of(net)
    head = len(net.trainable_weights)
    top, half, every = (set(unfreeze(net, model, how)) for how in ("top", "half", "all"))
    assert top and top < half < every
    first_top = next(i for i, layer in enumerate(backbone.layers) if layer.name.startswith(BACKBONES[model].top))
    assert top == {layer.name for layer in backbone.layers[first_top:] if layer.weights
                   and not isinstance(layer, keras.layers.BatchNormalization)}
    assert not any(isinstance(backbone.get_layer(name), keras.layers.BatchNormalization) for name in every)
    assert len(net.trainable_weights) > head
    assert unfreeze(net, model, "none") == []
    # The shipped model is rebuilt frozen and given these weights: the order does not follow what trains.
    from tuning.evaluate import inference_model

    x = np.random.default_rng(0).integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
    shipped = inference_model(model, _params(load_space(model)), net, N_CLASSES)
    np.testing.assert_allclose(shipped.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


# ----- weights: by path, offline, wrong files -------------------------------------------------------------
def test_weights_saved_from_one_build_load_back_by_path(tmp_path: Path) -> None:
    """The --weights PATH route: a second build from the saved file has exactly the saved weights."""
    model = "mobilenet_v3_small"
    path, saved = _saved_backbone(tmp_path, model)
    space = load_space(model).with_weights(str(path))
    assert space.base["weights"] == path.as_posix() and path.as_posix() in space.params["weights"].values
    check_study_weights(model, space)  # the pre-trial check accepts it
    keras.backend.clear_session()
    again = build_model(model, _params(space, weights=path.as_posix()), (SIZE, SIZE, 3), N_CLASSES)
    loaded = _backbone_weights(again)
    assert loaded.keys() == saved.keys()
    for name, weights in saved.items():
        for a, b in zip(weights, loaded[name]):
            np.testing.assert_array_equal(a, b)
    fresh = _backbone_weights(build_model(model, _params(space), (SIZE, SIZE, 3), N_CLASSES))
    assert any(not np.array_equal(a, b) for name in saved for a, b in zip(saved[name], fresh[name]))


def test_a_file_in_keras_format_put_in_the_cache_folder_is_used_offline(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The route without internet and without --weights: Keras' no-top file (the legacy HDF5 layout its
    downloads have, written here from a build) put into $KERAS_HOME/models under its own name is found there,
    passes the pre-trial check with no download, and a build with weights = "imagenet" has its weights."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    model = "mobilenet_v3_small"
    path, saved = _saved_backbone(tmp_path, model)
    net = build_model(model, _params(load_space(model), weights=path.as_posix()), (SIZE, SIZE, 3), N_CLASSES)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a download attempt would fail
    (tmp_path / "home" / "models").mkdir(parents=True)
    with h5py.File(tmp_path / "home" / "models" / BACKBONES[model].file, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, backbone_of(net))
    check_weights(model, ["imagenet"])
    keras.backend.clear_session()
    loaded = _backbone_weights(build_model(model, _params(load_space(model), weights="imagenet"), (SIZE, SIZE, 3),
                                           N_CLASSES))
    for name, weights in saved.items():
        for a, b in zip(weights, loaded[name]):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(WeightsError, match=rf"^mobilenet_v3_large: the ImageNet weights "
                                           rf"{BACKBONES['mobilenet_v3_large'].file} are not in "):
        check_weights("mobilenet_v3_large", ["imagenet"])  # another backbone's file does not count
    wrong = tmp_path / "home" / "models" / BACKBONES["mobilenet_v3_large"].file
    wrong.write_bytes((tmp_path / "home" / "models" / BACKBONES[model].file).read_bytes())
    with pytest.raises(WeightsError, match=rf"^mobilenet_v3_large: {wrong}: not mobilenet_v3_large's no-top weights"):
        check_weights("mobilenet_v3_large", ["imagenet"])  # small's weights under large's name


def test_wrong_weights_files_are_one_line_errors(tmp_path: Path) -> None:
    small, _ = _saved_backbone(tmp_path, "mobilenet_v3_small")
    with pytest.raises(WeightsError) as info:
        check_weights("mobilenet_v3_large", [str(small)])
    message = str(info.value)
    assert message.startswith(f"--weights {small}: not mobilenet_v3_large's no-top weights (")
    assert message.endswith(f"; use Keras' {BACKBONES['mobilenet_v3_large'].file} from "
                            f"{BACKBONES['mobilenet_v3_large'].url}") and "\n" not in message
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightsError, match=rf"^--weights {junk}: not mobilenet_v3_small's no-top weights"):
        check_weights("mobilenet_v3_small", [str(junk)])
    missing = tmp_path / "absent.h5"
    with pytest.raises(WeightsError, match=rf"^--weights {missing}: no such file; pass the path of "
                                           "mobilenet_v3_small's no-top weights"):
        check_weights("mobilenet_v3_small", [str(missing)])


def test_weights_option_is_refused_for_a_model_without_weights() -> None:
    with pytest.raises(SpaceError, match=r"^--weights: search_spaces/vgg16.toml declares no weights parameter"):
        load_space("vgg16").with_weights("none")


@pytest.mark.parametrize("args, message", [
    (["lr-find", "--model", "mobilenet_v3_small", "--weights", "{missing}"],
     "Error: --weights {missing}: no such file; pass the path of mobilenet_v3_small's no-top weights"),
    (["lr-find", "--model", "alexnet", "--weights", "none"],
     "Error: --weights: search_spaces/alexnet.toml declares no weights parameter"),
    (["search", "--model", "efficientnetv2_b0", "--weights", "{missing}", "--study", "{tmp}/runs/s"],
     "Error: --weights {missing}: no such file"),
])
def test_weights_option_errors_are_one_line_and_write_nothing(args: list[str], message: str, tiny_dataset: Path,
                                                              tmp_path: Path) -> None:
    missing = tmp_path / "absent.h5"
    args = [a.format(missing=missing, tmp=tmp_path) for a in args] + ["--data", str(tiny_dataset), "--budget",
                                                                      "quick"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.startswith(message.format(missing=missing)) and result.output.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_weights_are_recorded_absolute_in_config_and_a_resume_with_others_is_refused(tiny_dataset: Path,
                                                                                    tmp_path: Path) -> None:
    from tuning.pipeline import SearchRequest, resolve_config
    from tuning.study import write_config

    settings = {"device": "cpu", "precision": "float32"}
    folder = tmp_path / "runs" / "w"
    request = SearchRequest(model="mobilenet_v3_small", data=tiny_dataset, weights="relative/file.h5",
                            budget="quick", study=str(folder))
    config = resolve_config(request, settings=settings)
    absolute = (Path.cwd() / "relative" / "file.h5").as_posix()
    assert config.space["base"]["weights"] == absolute
    assert config.space["params"]["weights"]["values"] == ["imagenet", "none", absolute]
    assert resolve_config(SearchRequest(model="mobilenet_v3_small", data=tiny_dataset, budget="quick",
                                        study=str(folder)), settings=settings).space["base"]["weights"] == "imagenet"
    write_config(folder, config)
    with pytest.raises(StudyError, match="holds a study with a search space that differs in base, params"):
        resolve_config(SearchRequest(model="mobilenet_v3_small", data=tiny_dataset, weights="none", budget="quick",
                                     study=str(folder)), settings=settings)


def test_offline_without_the_cached_file_is_one_line_before_any_trial(tiny_dataset: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No cached file and no network (every request goes to a closed port on this machine): one line that
    names the file, its URL and the folder to put it in, exit 1, and no study folder written."""
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert weights_dir() == home / "models"
    spec = BACKBONES["mobilenet_v3_small"]
    folder = tmp_path / "runs" / "offline"
    result = CliRunner().invoke(cli, ["search", "--model", "mobilenet_v3_small", "--data", str(tiny_dataset),
                                      "--budget", "quick", "--study", str(folder)])
    assert result.exit_code == 1, result.output
    line = result.output.splitlines()[-1]
    assert line.startswith(f"Error: mobilenet_v3_small: the ImageNet weights {spec.file} are not in {home}/models "
                           "and could not be downloaded (")
    assert line.endswith(f"); fetch {spec.url} into {home}/models, or pass --weights PATH to that file "
                         "(--weights none trains from scratch)")
    assert "Traceback" not in result.output and not folder.exists()
    assert not list((home / "models").glob("*.h5"))  # no half file left behind


# ----- the two phases -------------------------------------------------------------------------------------
def _trial(dataset: Path, weights: Path, *, epochs: int, **chosen: Any) -> tuple[Any, list[int], dict[str, Any]]:
    model = "mobilenet_v3_small"
    space = load_space(model).with_weights(str(weights))
    params = space.resolve({"image_size": SIZE, "batch_size": 16, "augmentation": "none", "dense_units": 128,
                            "split": "70/15/15", **chosen})
    seen: list[int] = []
    # Fitted on train+val (as ``retrain --fit-on train+val``): nothing validates, so the trial ends on its last
    # epoch's weights, not on a best epoch that could lie in phase 1.
    data = _TrainPlusVal(TrialData(dataset, seed=0, test_fraction=0.15))
    result = train_trial(model, params, data, space, epochs=epochs, seed=0, keep_model=True,
                         hooks=[lambda epoch, logs: seen.append(epoch) is not None])
    assert result.status == "complete", result.reason
    return result, seen, params


def _moved(before: dict[str, list[np.ndarray]], after: dict[str, list[np.ndarray]]) -> set[str]:
    return {name for name in before if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))}


@pytest.mark.slow
def test_phase_one_moves_only_the_head(tiny_dataset: Path, tmp_path: Path) -> None:
    """head_epochs on the frozen backbone: no backbone weight and no BatchNorm moving statistic changes."""
    path, start = _saved_backbone(tmp_path, "mobilenet_v3_small")
    result, seen, _ = _trial(tiny_dataset, path, epochs=2, unfreeze="top", head_epochs=2)
    assert seen == [0, 1] and result.epochs == 2
    assert _moved(start, _backbone_weights(result.model)) == set()
    assert np.isfinite(result.history["loss"]).all()


@pytest.mark.slow
def test_phase_two_with_unfreeze_top_moves_the_top_block_only(tiny_dataset: Path, tmp_path: Path) -> None:
    """1 epoch of head, then 2 with the top block trainable at learning_rate * fine_tune_lr_factor: one history
    and one epoch count across both phases; the top block's convolutions move, nothing below them does, and
    no BatchNorm statistic moves (the backbone runs in inference mode)."""
    path, start = _saved_backbone(tmp_path, "mobilenet_v3_small")
    result, seen, params = _trial(tiny_dataset, path, epochs=3, unfreeze="top", head_epochs=1,
                                  fine_tune_lr_factor=0.1)
    assert seen == [0, 1, 2] and result.epochs == 3 and len(result.history["accuracy"]) == 3
    assert float(result.model.optimizer.learning_rate) == pytest.approx(params["learning_rate"] * 0.1)
    moved = _moved(start, _backbone_weights(result.model))
    backbone = backbone_of(result.model)
    first = [layer.name for layer in backbone.layers].index("expanded_conv_10_expand")  # the top block's start
    top = {layer.name for layer in backbone.layers[first:]}
    batchnorm = {layer.name for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert moved and moved <= top - batchnorm
    assert {"expanded_conv_10_expand", "conv_1"} <= moved


def test_fit_phases_follow_unfreeze_and_head_epochs() -> None:
    from tuning.train import fit_phases

    space = load_space("mobilenet_v3_small")
    net = build_model("mobilenet_v3_small", _params(space), (SIZE, SIZE, 3), N_CLASSES)
    base = {"learning_rate": 1e-3, "fine_tune_lr_factor": 0.1, "head_epochs": 2}
    two = fit_phases(net, {**base, "unfreeze": "half"}, 5)
    assert [(end, how) for end, _, how in two] == [(2, "none"), (5, "half")]
    assert two[0][1]["learning_rate"] == 1e-3 and two[1][1]["learning_rate"] == pytest.approx(1e-4)
    assert [(e, h) for e, _, h in fit_phases(net, {**base, "unfreeze": "none"}, 5)] == [(5, "none")]
    assert [(e, h) for e, _, h in fit_phases(net, {**base, "unfreeze": "all"}, 2)] == [(2, "none")]
    assert [(e, h) for e, _, h in fit_phases(net, {**base, "unfreeze": "all", "head_epochs": 0}, 3)] == [(3, "all")]
    study = build_model("alexnet", {**load_space("alexnet").resolve({"image_size": 64}),
                                    "augmentation": load_space("alexnet").augmentation("none")}, (64, 64, 3), 3)
    assert [(e, h) for e, _, h in fit_phases(study, {**base, "unfreeze": "all"}, 4)] == [(4, "none")]


# ----- end to end -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_search_with_weights_none_runs_offline_and_exports_what_it_tested(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``tuning search --model mobilenet_v3_small --weights none`` on demo data with the quick budget (one
    trial, 4 epochs: 3 of head and 1 of fine-tuning), no network: it finishes, config.toml records the weights,
    and the exported model answers the raw test files as the tested model did."""
    import csv

    from tuning.data.demo import make_demo
    from tuning.data.images import load_raw_rgb
    from tuning.inference import load_predictor
    from tuning.study import read_config

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    data = tmp_path / "demo"
    make_demo(data / "raw", per_class=12, size=32, seed=0)
    folder = tmp_path / "runs" / "scratch"
    result = CliRunner().invoke(cli, ["search", "--model", "mobilenet_v3_small", "--data", str(data), "--weights",
                                      "none", "--budget", "quick", "--trials", "1", "--epochs", "4", "--pruner",
                                      "none", "--params", "learning_rate", "--study", str(folder)])
    assert result.exit_code == 0, result.output
    config = read_config(folder)
    assert config.space["base"]["weights"] == "none" and config.space["base"]["image_size"] == 96
    with open(folder / "final" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    recorded = np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])
    probs = load_predictor(folder / "export" / "model.keras").run([load_raw_rgb(data / r["file"]) for r in rows])
    assert np.abs(probs - recorded).max() < 1e-4
    assert not list((tmp_path / "empty-keras-home").rglob("*.h5"))  # nothing was fetched
