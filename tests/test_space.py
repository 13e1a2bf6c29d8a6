"""Tests for search spaces: the built-in declarations, their three renderings and every bad-TOML message."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import optuna
import pytest

from search_spaces import builtin_names, builtin_path
from tuning.errors import SpaceError, UnknownNameError
from tuning.space import Bool, Choice, Float, Int, SearchSpace, load_space

BUILTINS = builtin_names()
N_TRIALS = 20


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=BUILTINS)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return load_space(request.param)


#: The study's own from-scratch nets, whose spaces carry the modern recipe with BatchNorm.
STUDY_SPACES = ["alexnet", "vgg16"]
BACKBONE_SPACES = [name for name in BUILTINS if name not in STUDY_SPACES]


@pytest.fixture(params=STUDY_SPACES)
def study_space(request: pytest.FixtureRequest) -> SearchSpace:
    return load_space(request.param)


def _optuna_values(space: SearchSpace, *, seed: int = 0, n_trials: int = N_TRIALS) -> list[tuple[dict, dict]]:
    """(values returned by suggest_optuna, trial.params) for each trial of a real random-sampler study."""
    seen: list[tuple[dict, dict]] = []

    def objective(trial: optuna.Trial) -> float:
        values = space.suggest_optuna(trial)
        seen.append((values, dict(trial.params)))
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    assert len(study.trials) == n_trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return seen


def _kt_values(space: SearchSpace, *, n_trials: int = N_TRIALS) -> tuple[kt.HyperParameters, list[dict]]:
    """Declare once, then sample every active declared hp the way an oracle populates a trial."""
    declared = kt.HyperParameters()
    space.define_kerastuner(declared)
    samples = []
    for seed in range(n_trials):
        hp = declared.copy()
        for h in hp.space:  # declaration order, so a parent is set before its conditional children
            if hp.is_active(h):
                hp.values[h.name] = h.random_sample(seed)
        samples.append(space.define_kerastuner(hp))
    return declared, samples


def _assert_legal(space: SearchSpace, values: dict[str, Any]) -> None:
    for name, value in values.items():
        assert space.params[name].contains(value), f"{name}={value!r} is not legal"
    # Exactly the active parameters: the same names that resolving these choices gives.
    assert list(values) == list(space.resolve(values))


# ----- rendering: Optuna and Keras Tuner see the same declaration -----------------------------------------
def test_optuna_renders_every_param_legally(space: SearchSpace) -> None:
    everything = space.with_search(list(space.params))
    names: set[str] = set()
    for values, trial_params in _optuna_values(everything):
        _assert_legal(everything, values)
        assert trial_params == values  # all searched, so Optuna records every active value
        names |= set(values)
    assert names == set(space.params)


def test_kerastuner_declares_every_param_like_the_file(space: SearchSpace) -> None:
    everything = space.with_search(list(space.params))
    declared, samples = _kt_values(everything)
    assert [h.name for h in declared.space] == list(space.params)
    for h in declared.space:
        param = space.params[h.name]
        if isinstance(param, Float):
            assert isinstance(h, kt.engine.hyperparameters.Float)
            assert (h.min_value, h.max_value, h.step) == (param.low, param.high, param.step)
            assert h.sampling == ("log" if param.log else "linear")
        elif isinstance(param, Int):
            assert isinstance(h, kt.engine.hyperparameters.Int)
            assert (h.min_value, h.max_value, h.step) == (param.low, param.high, param.step)
        elif isinstance(param, Choice):
            assert isinstance(h, kt.engine.hyperparameters.Choice)
            assert list(h.values) == list(param.values)
        else:
            assert isinstance(param, Bool) and isinstance(h, kt.engine.hyperparameters.Boolean)
    names: set[str] = set()
    for values in samples:
        _assert_legal(everything, values)
        names |= set(values)
    assert names == set(space.params)


def test_both_backends_give_the_same_names(space: SearchSpace) -> None:
    """Each backend's trials hold exactly the parameters active under their optimizer, schedule and (in the
    backbone spaces) unfreeze values (momentum with sgd, weight_decay with adamw, warmup_epochs with cosine,
    head_epochs and fine_tune_lr_factor unless unfreeze = none)."""
    import itertools

    everything = space.with_search(list(space.params))
    parents = [name for name in space.params if any(name in p.when for p in space.params.values())]
    assert {"optimizer", "schedule"} <= set(parents)
    expected = {frozenset(space.resolve(dict(zip(parents, values))))
                for values in itertools.product(*(space.params[n].grid_values() for n in parents))}
    assert len(expected) == len(space.params["optimizer"].values) * len(space.params["schedule"].values) * (
        2 if "unfreeze" in parents else 1)
    optuna_names = {frozenset(v) for v, _ in _optuna_values(everything, n_trials=60 * (len(parents) - 1))}
    kt_names = {frozenset(v) for v in _kt_values(everything, n_trials=60)[1]}
    assert optuna_names == expected
    # Keras Tuner's random_sample(seed) draws every choice from the same seed, so some pairs never meet.
    assert kt_names <= expected and len(kt_names) > 2


def test_default_search_renders_only_searched_params(space: SearchSpace) -> None:
    declared = kt.HyperParameters()
    values = space.define_kerastuner(declared)
    assert [h.name for h in declared.space] == list(space.search)
    # A conditional axis whose parent's first value switches it off (unfreeze "none") is not in the values.
    assert values == space.resolve({name: values[name] for name in space.search if name in values})
    for values, trial_params in _optuna_values(space, n_trials=5):
        assert set(trial_params) == set(space.search)
        assert values == space.resolve(trial_params)


# ----- conditional parameters ----------------------------------------------------------------------------
def test_momentum_only_with_sgd_in_optuna(space: SearchSpace) -> None:
    everything = space.with_search(list(space.params))
    optimizers = set()
    for values, trial_params in _optuna_values(everything, seed=1, n_trials=30):
        optimizers.add(values["optimizer"])
        assert ("momentum" in trial_params) == (values["optimizer"] == "sgd")
        assert ("momentum" in values) == (values["optimizer"] == "sgd")
    assert optimizers == {"adam", "sgd", "adamw"}  # every branch was exercised


def test_fixed_trial_adam_has_no_momentum_sgd_has_it(space: SearchSpace) -> None:
    everything = space.with_search(list(space.params))
    chosen = {name: space.base[name] for name in space.params}
    adam = everything.suggest_optuna(optuna.trial.FixedTrial({**chosen, "optimizer": "adam"}))
    assert adam["optimizer"] == "adam" and "momentum" not in adam
    sgd = everything.suggest_optuna(optuna.trial.FixedTrial({**chosen, "optimizer": "sgd", "momentum": 0.5}))
    assert sgd["momentum"] == 0.5


def test_momentum_declared_under_optimizer_condition_in_kerastuner(space: SearchSpace) -> None:
    """A fresh HyperParameters holds optimizer='adam', yet momentum must be declared so oracles sample it."""
    hp = kt.HyperParameters()
    values = space.with_search(["optimizer", "momentum"]).define_kerastuner(hp)
    assert values["optimizer"] == "adam" and "momentum" not in values
    momentum = next(h for h in hp.space if h.name == "momentum")
    assert [(c.name, list(c.values)) for c in momentum.conditions] == [("optimizer", ["sgd"])]
    assert not hp.is_active("momentum")
    hp.values["optimizer"] = "sgd"
    assert hp.is_active("momentum")


def test_momentum_follows_base_optimizer_when_optimizer_not_searched(space: SearchSpace) -> None:
    hp = kt.HyperParameters()
    assert "momentum" not in space.with_search(["momentum"]).define_kerastuner(hp)
    assert hp.space == []  # adam in base: momentum can never be active, so it is not declared
    sgd = space.with_base({"optimizer": "sgd"}).with_search(["momentum"])
    hp = kt.HyperParameters()
    assert "momentum" in sgd.define_kerastuner(hp)
    assert [h.name for h in hp.space] == ["momentum"] and hp.space[0].conditions == []


# ----- narrowing and round trips --------------------------------------------------------------------------
def test_resolve_empty_gives_base_without_inactive(space: SearchSpace) -> None:
    resolved = space.resolve({})
    assert space.base["optimizer"] == "adam"
    inactive = {"momentum", "weight_decay", "warmup_epochs"}  # sgd-only, adamw-only, cosine-only
    assert resolved == {name: space.base[name] for name in space.params if name not in inactive}
    with_sgd = space.resolve({"optimizer": "sgd"})
    assert with_sgd["momentum"] == space.base["momentum"]
    assert "epochs" not in resolved  # a run setting, not a parameter


def test_with_budget_quick_pins_and_unsearches(space: SearchSpace) -> None:
    narrowed, budget = space.with_budget("quick")
    assert budget.fixed and set(budget.fixed) <= set(space.params)
    assert narrowed.base["epochs"] == budget.epochs
    for name, value in budget.fixed.items():
        assert narrowed.base[name] == value
        assert name not in narrowed.search
        assert narrowed.resolve({})[name] == value
    wide, _ = space.with_search(list(space.params)).with_budget("quick")
    assert set(wide.search) == set(space.params) - set(budget.fixed)


def test_with_budget_unknown_lists_known(space: SearchSpace) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown budget 'huge'; known: full, quick"):
        space.with_budget("huge")


def test_with_search_rejects_unknown_and_lists_known(space: SearchSpace) -> None:
    with pytest.raises(UnknownNameError) as info:
        space.with_search(["learning_rate", "lr"])
    message = str(info.value)
    assert "unknown parameter 'lr'" in message
    assert "known: " + ", ".join(sorted(space.params)) in message


def test_with_search_keeps_declaration_order(space: SearchSpace) -> None:
    assert space.with_search(["split", "learning_rate"]).search == ("learning_rate", "split")


def test_dict_round_trip(space: SearchSpace) -> None:
    assert SearchSpace.from_dict(space.to_dict(), source=space.source) == space
    narrowed = space.with_budget("quick")[0]
    assert SearchSpace.from_dict(narrowed.to_dict(), source=space.source) == narrowed


# ----- the study's staged plan and the test share ---------------------------------------------------------
STUDY_LR = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
STUDY_DROPOUT = (0.1, 0.2, 0.3, 0.4, 0.5)


@pytest.mark.parametrize(
    "name, order",
    [
        ("vgg16", ["learning_rate", "dropout", "augmentation", "split"]),
        ("alexnet", ["learning_rate", "augmentation", "dropout", "split"]),
    ],
)
def test_staged_stages_follow_the_study(name: str, order: list[str]) -> None:
    space = load_space(name)
    stages = dict(space.staged_stages())
    assert [axis for axis, _ in space.staged_stages()] == order
    assert stages["learning_rate"] == pytest.approx(STUDY_LR, rel=1e-12)
    assert stages["dropout"] == pytest.approx(STUDY_DROPOUT, abs=1e-12)
    assert stages["augmentation"] == tuple(space.augmentations)
    assert stages["split"] == ("70/15/15", "80/10/10", "60/20/20")


def test_test_fraction_is_largest_searchable_test_share(space: SearchSpace) -> None:
    assert "split" in space.search
    assert space.test_fraction() == pytest.approx(0.2)
    assert space.with_search(["learning_rate"]).test_fraction() == pytest.approx(0.15)
    assert space.with_base({"split": "80/10/10"}).with_search(["dropout"]).test_fraction() == pytest.approx(0.1)


# ----- bad declarations -----------------------------------------------------------------------------------
VALID = """\
model = "vgg16"

[base]
learning_rate = 1e-3
dropout = 0.0
augmentation = "none"
split = "70/15/15"
optimizer = "adam"
momentum = 0.9
epochs = 2
batch_size = 32
image_size = 64
width = 0.25
dense_units = 64

[params.batch_size]
type = "choice"
values = [32]

[params.image_size]
type = "choice"
values = [64]

[params.width]
type = "choice"
values = [0.25]

[params.dense_units]
type = "int"
low = 16
high = 128
step = 16

[params.learning_rate]
type = "float"
low = 1e-6
high = 1e-2
log = true
grid = [1e-2, 1e-4]

[params.dropout]
type = "float"
low = 0.0
high = 0.5
step = 0.1

[params.augmentation]
type = "choice"
values = ["none", "small"]

[params.split]
type = "choice"
values = ["70/15/15", "60/20/20"]

[params.optimizer]
type = "choice"
values = ["adam", "sgd"]

[params.momentum]
type = "float"
low = 0.0
high = 0.99
when = { optimizer = ["sgd"] }

[augmentation.none]

[augmentation.small]
shift = 0.05

[staged]
order = ["learning_rate", "dropout"]
"""


def _edit(old: str, new: str) -> str:
    assert VALID.count(old) == 1, old
    return VALID.replace(old, new)


BAD = [
    pytest.param(_edit('type = "float"\nlow = 1e-6', 'type = "real"\nlow = 1e-6'),
                 ["params.learning_rate", "unknown type 'real'", "known: float, int, choice, bool"], id="unknown-type"),
    pytest.param(_edit("low = 0.0\nhigh = 0.5", "low = 0.6\nhigh = 0.5"),
                 ["params.dropout", "low <= high", "low=0.6, high=0.5"], id="low-above-high"),
    pytest.param(_edit("log = true\n", "log = true\nstep = 1e-6\n"),
                 ["params.learning_rate", "log and step cannot be used together"], id="log-with-step"),
    pytest.param(_edit('values = ["adam", "sgd"]', "values = []"),
                 ["params.optimizer", "values must not be empty"], id="empty-choice"),
    pytest.param(_edit("optimizer = [\"sgd\"]", "solver = [\"sgd\"]"),
                 ["params.momentum", "condition on 'solver'", "not a parameter"], id="condition-on-missing"),
    pytest.param("name = \"x\"\n" + VALID,
                 ["top level", "unknown key 'name'", "known: "], id="unknown-top-level-key"),
    pytest.param(_edit("high = 0.99\n", "high = 0.99\ndefault = 0.9\n"),
                 ["params.momentum", "unknown key 'default'", "known: grid, high, log, low, step, type, when"],
                 id="unknown-param-key"),
    pytest.param(_edit("dropout = 0.0\n", ""),
                 ["base.dropout", "missing"], id="missing-base"),
    pytest.param(_edit("dropout = 0.0\n", "dropout = 0.7\n"),
                 ["base.dropout", "0.7 is not a legal value", "[0.0, 0.5]"], id="base-out-of-range"),
    pytest.param(_edit('"60/20/20"]', '"60/30/20"]'),
                 ["params.split", "'60/30/20' is not a split", "summing to 100"], id="bad-split"),
    pytest.param(_edit('["none", "small"]', '["none", "small", "huge"]'),
                 ["params.augmentation", "'huge'", "known: none, small"], id="undeclared-preset"),
    pytest.param(_edit("[params.width]\ntype = \"choice\"\nvalues = [0.25]\n\n", "").replace("width = 0.25\n", ""),
                 ["params.width", "missing", "training needs it"], id="missing-required-param"),
    pytest.param(_edit('[params.split]', '[params.split'),
                 ["not valid TOML", "line"], id="not-toml"),
]


#: Values the trainer or the models cannot use, wherever they enter: base values, parameter ranges, choice
#: values, grids and budget overrides. Each is refused on load with one message shape.
BAD_VALUES = [
    pytest.param(_edit('values = ["adam", "sgd"]', 'values = ["adam", "rmsprop"]').replace(
        'optimizer = "adam"', 'optimizer = "rmsprop"'),
                 "params.optimizer.values: 'rmsprop'", "optimizer must be one of adam, sgd, adamw",
                 id="optimizer-rmsprop"),
    pytest.param(_edit("low = 1e-6\nhigh = 1e-2\nlog = true\ngrid = [1e-2, 1e-4]",
                       "low = -1e-3\nhigh = 1e-2\ngrid = [1e-2, 1e-4]"),
                 "params.learning_rate.low: -0.001", "learning_rate must be a number > 0", id="lr-negative-low"),
    pytest.param(_edit("low = 1e-6\nhigh = 1e-2\nlog = true\ngrid = [1e-2, 1e-4]",
                       "low = 0.0\nhigh = 1e-2\ngrid = [1e-2, 1e-4]"),
                 "params.learning_rate.low: 0.0", "learning_rate must be a number > 0", id="lr-zero"),
    pytest.param(_edit("low = 0.0\nhigh = 0.5\nstep = 0.1", "low = 0.0\nhigh = 1.0\nstep = 0.1"),
                 "params.dropout.high: 1.0", "dropout must be a number in [0, 1)", id="dropout-one"),
    pytest.param(_edit("low = 0.0\nhigh = 0.5\nstep = 0.1", "low = -0.1\nhigh = 0.5\nstep = 0.1"),
                 "params.dropout.low: -0.1", "dropout must be a number in [0, 1)", id="dropout-negative"),
    pytest.param(_edit("low = 0.0\nhigh = 0.99\n", "low = 0.0\nhigh = 1.5\n"),
                 "params.momentum.high: 1.5", "momentum must be a number in [0, 1]", id="momentum-above-one"),
    pytest.param(_edit("values = [64]", "values = [0, 64]"),
                 "params.image_size.values: 0", "image_size must be an integer >= 1", id="image-size-zero"),
    pytest.param(_edit("values = [64]", "values = [64.5]").replace("image_size = 64", "image_size = 64.5"),
                 "params.image_size.values: 64.5", "image_size must be an integer >= 1", id="image-size-float"),
    pytest.param(_edit("values = [32]", "values = [0]").replace("batch_size = 32", "batch_size = 0"),
                 "params.batch_size.values: 0", "batch_size must be an integer >= 1", id="batch-size-zero"),
    pytest.param(_edit("values = [0.25]", "values = [0.0]").replace("width = 0.25", "width = 0.0"),
                 "params.width.values: 0.0", "width must be a number > 0", id="width-zero"),
    pytest.param(_edit("low = 16\nhigh = 128", "low = 0\nhigh = 128"),
                 "params.dense_units.low: 0", "dense_units must be an integer >= 1", id="dense-units-zero"),
    pytest.param(_edit('[params.dense_units]\ntype = "int"', '[params.dense_units]\ntype = "float"'),
                 "params.dense_units.type: 'float'", "dense_units must be an integer >= 1", id="dense-units-float"),
    pytest.param(_edit("epochs = 2\n", "epochs = 0\n"),
                 "base.epochs: 0", "epochs must be an integer >= 1", id="epochs-zero"),
    pytest.param(_edit("epochs = 2\n", "epochs = 2.5\n"),
                 "base.epochs: 2.5", "epochs must be an integer >= 1", id="epochs-float"),
    pytest.param(VALID + "\n[budgets.quick]\ntrials = 2\nepochs = 0\nfixed = {}\n",
                 "budgets.quick.epochs: 0", "epochs must be an integer >= 1", id="budget-epochs-zero"),
    pytest.param(VALID + "\n[budgets.quick]\ntrials = 2\nepochs = 1\nfixed = { image_size = 0 }\n",
                 "budgets.quick.fixed.image_size: 0", "image_size must be an integer >= 1", id="budget-fixed-size"),
    pytest.param(_edit("grid = [1e-2, 1e-4]", "grid = [-1.0]").replace(
        "low = 1e-6\nhigh = 1e-2\nlog = true", "low = -1.0\nhigh = 1e-2"),
                 "params.learning_rate.low: -1.0", "learning_rate must be a number > 0", id="lr-grid-negative"),
]


@pytest.mark.parametrize("text, where, rule", BAD_VALUES)
def test_values_the_trainer_cannot_use_are_refused_on_load(tmp_path: Path, text: str, where: str,
                                                           rule: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_toml(path)
    assert str(info.value) == f"{path}: {where} is not a legal value; {rule}"


@pytest.mark.parametrize("key, value", [("learning_rate", -1e-3), ("optimizer", "rmsprop"), ("batch_size", 0),
                                        ("image_size", 0), ("dropout", 1.0), ("epochs", 0)])
def test_base_overrides_are_checked_like_the_file(key: str, value: Any) -> None:
    """``with_base`` (a budget's pins, ``--epochs``) meets the same constraints; a bare Choice of 0 cannot
    slip in because the override names the key it breaks."""
    space = SearchSpace.from_dict(tomllib.loads(VALID))
    with pytest.raises(SpaceError, match=f"^{key}: {re.escape(repr(value))} is not a legal value; {key} must be"):
        space.with_base({key: value})


#: Shapes TOML allows where a table or a list was meant; each gets a SpaceError naming the key, not a traceback.
BAD_SHAPES = [
    pytest.param(_edit('when = { optimizer = ["sgd"] }', 'when = "sgd"'),
                 ["params.momentum.when: must be a table", "optimizer"], id="when-string"),
    pytest.param(VALID.replace("[params.batch_size]", "[params]\nx = 5\n\n[params.batch_size]"),
                 ["params.x: must be a table, but got 5"], id="param-not-table"),
    pytest.param(_edit("[augmentation.small]\nshift = 0.05", "[augmentation]\nsmall = 0.05"),
                 ["augmentation.small: must be a table"], id="preset-not-table"),
    pytest.param(VALID + '\n[search]\nparams = "learning_rate"\n',
                 ["search.params: must be a list of parameter names"], id="search-params-string"),
    pytest.param(VALID + "\n[budgets]\nquick = 3\n", ["budgets.quick: must be a table"], id="budget-not-table"),
    pytest.param(_edit("low = 0.0\nhigh = 0.5", 'low = "0"\nhigh = 0.5'),
                 ["params.dropout.low: must be a number, but got '0'"], id="low-string"),
    pytest.param(_edit("log = true\n", 'log = "yes"\n'),
                 ["params.learning_rate.log: must be true or false"], id="log-string"),
]


@pytest.mark.parametrize("text, expected", BAD_SHAPES)
def test_wrong_toml_shapes_name_the_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_toml(path)
    for part in expected:
        assert str(info.value).startswith(f"{path}: ") and part in str(info.value), str(info.value)


def test_minimal_space_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "mini.toml"
    path.write_text(VALID, encoding="utf-8")
    space = SearchSpace.from_toml(path)
    assert space.source == str(path)
    assert space.search == tuple(space.params)
    assert space.test_fraction() == pytest.approx(0.2)


@pytest.mark.parametrize("text, expected", BAD)
def test_bad_toml_names_file_key_and_problem(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_toml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_file_is_a_space_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_space(path)


# ----- loading by name or by path -------------------------------------------------------------------------
def test_builtins_are_the_study_models_and_the_backbones() -> None:
    assert BUILTINS == ["alexnet", "efficientnetv2_b0", "mobilenet_v3_large", "mobilenet_v3_small", "vgg16",
                        "vgg16_imagenet"]
    for name in BUILTINS:
        assert load_space(name).model == name
        assert load_space(name).source == f"search_spaces/{name}.toml"


def test_unknown_space_lists_builtins() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown search space 'vgg19'; known: alexnet, efficientnetv2_b0, "
                       r"mobilenet_v3_large, mobilenet_v3_small, vgg16, vgg16_imagenet$"):
        load_space("vgg19")


@pytest.mark.parametrize("name", BUILTINS)
def test_user_path_loads_like_builtin(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"my_{name}.toml"
    path.write_text(builtin_path(name).read_text(encoding="utf-8"), encoding="utf-8")
    for arg in (path, str(path)):
        user = load_space(arg)
        assert user.source == str(path)
        assert SearchSpace.from_dict(user.to_dict(), source="x") == SearchSpace.from_dict(
            load_space(name).to_dict(), source="x"
        )


def test_user_file_errors_name_the_user_file(tmp_path: Path) -> None:
    """A user file named like a built-in reports its own path, not the built-in's."""
    path = tmp_path / "vgg16.toml"
    path.write_text(builtin_path("vgg16").read_text(encoding="utf-8").replace("dropout = 0.0", "dropout = 0.9"),
                    encoding="utf-8")
    with pytest.raises(SpaceError, match="^" + re.escape(f"{path}: base.dropout")):
        load_space(path)


# ----- the modern recipe: new axes, off in base; presets ---------------------------------------------------
#: The staged plan of each built-in space as computed on main before the recipe existed (``plan_size`` and
#: ``staged_stages`` after ``resolve_space`` for ``--engine staged``): the same for both budgets.
MAIN_PLAN_SIZE = 16
MAIN_STAGES = {
    "alexnet": [("learning_rate", STUDY_LR), ("augmentation", ("none", "rotation", "small", "medium", "large")),
                ("dropout", STUDY_DROPOUT), ("split", ("70/15/15", "80/10/10", "60/20/20"))],
    "vgg16": [("learning_rate", STUDY_LR), ("dropout", STUDY_DROPOUT),
              ("augmentation", ("none", "rotation", "small", "medium", "large")),
              ("split", ("70/15/15", "80/10/10", "60/20/20"))],
}
RECIPE_KEYS = ("batch_norm", "head", "flip", "crop", "weight_decay", "label_smoothing", "schedule", "warmup_epochs",
               "patience")


@pytest.mark.parametrize("name", sorted(MAIN_STAGES))
@pytest.mark.parametrize("budget", ["quick", "full"])
def test_staged_plan_replays_the_study_unchanged(name: str, budget: str) -> None:
    """``--engine staged`` walks the same configurations as before the recipe: same axes, values and count,
    and every configuration it can train has each recipe key at the study's value (off)."""
    from tuning.engines.staged import plan_size
    from tuning.pipeline import SearchRequest, resolve_space
    from tuning.space import RECIPE_DEFAULTS

    space, trials, _ = resolve_space(SearchRequest(model=name, data=Path("unused"), engine="staged"), budget)
    assert trials == plan_size(space) == MAIN_PLAN_SIZE
    stages = space.staged_stages()
    assert [axis for axis, _ in stages] == [axis for axis, _ in MAIN_STAGES[name]]
    assert set(space.search) == {axis for axis, _ in stages}
    for (axis, values), (_, main_values) in zip(stages, MAIN_STAGES[name]):
        assert values == (pytest.approx(main_values, rel=1e-12) if axis in ("learning_rate", "dropout")
                          else main_values), axis
    assert not set(RECIPE_KEYS) & set(space.staged_order)
    configurations = [space.resolve({})] + [space.resolve({axis: v}) for axis, values in stages for v in values]
    for resolved in configurations:
        assert resolved["optimizer"] == "adam"
        for key in RECIPE_KEYS:
            if key in resolved:  # weight_decay (adamw) and warmup_epochs (cosine) are inactive
                assert resolved[key] == RECIPE_DEFAULTS[key], key
        assert "weight_decay" not in resolved and "warmup_epochs" not in resolved


def test_recipe_axes_are_declared_in_both_builtins_and_not_searched_by_default(study_space: SearchSpace) -> None:
    space = study_space
    assert set(RECIPE_KEYS) <= set(space.params)
    assert not set(RECIPE_KEYS) & set(space.search)
    assert space.params["head"].values == ("flatten", "gap")
    assert space.params["schedule"].values == ("constant", "cosine")
    assert "adamw" in space.params["optimizer"].values
    assert space.params["weight_decay"].when == {"optimizer": ("adamw",)}
    assert space.params["warmup_epochs"].when == {"schedule": ("cosine",)}


def test_modern_preset_turns_the_recipe_on_and_is_recorded(study_space: SearchSpace) -> None:
    space = study_space
    modern = space.with_preset("modern")
    base = modern.base
    assert base["batch_norm"] is True and base["head"] == "gap" and base["flip"] is True and base["crop"] > 0
    assert base["optimizer"] == "adamw" and base["weight_decay"] > 0
    assert base["label_smoothing"] > 0 and base["schedule"] == "cosine" and base["warmup_epochs"] >= 1
    assert base["augmentation"] == space.base["augmentation"]  # flip/crop add to the study's preset
    # Only the starting point moves: the axes, the staged order and the search list are the study's.
    assert (modern.params, modern.staged_order, modern.search) == (space.params, space.staged_order, space.search)
    assert modern.preset == "modern" and space.preset == ""
    assert modern.to_dict()["preset"] == "modern" and "preset" not in space.to_dict()
    assert SearchSpace.from_dict(modern.to_dict(), source=space.source) == modern
    # A budget applied after the preset still pins what it pins.
    narrowed, budget = modern.with_budget("quick")
    assert all(narrowed.base[k] == v for k, v in budget.fixed.items()) and narrowed.base["head"] == "gap"


def test_unknown_preset_lists_the_known_ones(space: SearchSpace) -> None:
    with pytest.raises(UnknownNameError, match=r"^unknown preset 'modrn'; known: modern$"):
        space.with_preset("modrn")
    bare = SearchSpace.from_dict(tomllib.loads(VALID))
    with pytest.raises(UnknownNameError, match=r"^unknown preset 'modern'; known: \(none declared\)$"):
        bare.with_preset("modern")


def test_a_space_without_recipe_keys_still_loads(tmp_path: Path) -> None:
    """A declaration written before the recipe existed (no recipe key) is valid: the trainer uses the study's
    values for what it leaves out; and it serialises without preset keys, as before, so a study begun then
    compares equal on resume."""
    space = SearchSpace.from_dict(tomllib.loads(VALID))
    assert not set(RECIPE_KEYS) & set(space.params) and space.presets == {}
    assert set(space.to_dict()) == {"model", "base", "params", "augmentation", "search", "staged", "budgets"}


@pytest.mark.parametrize("key, value, rule", [
    ("weight_decay", -0.01, "a number >= 0"),
    ("label_smoothing", 1.0, "a number in [0, 1)"),
    ("label_smoothing", -0.1, "a number in [0, 1)"),
    ("patience", -1, "an integer >= 0"),
    ("patience", 2.5, "an integer >= 0"),
    ("warmup_epochs", -1, "an integer >= 0"),
    ("schedule", "step", "one of constant, cosine"),
    ("head", "avg", "one of flatten, gap"),
    ("batch_norm", 1, "true or false"),
    ("flip", "yes", "true or false"),
    ("crop", 1.0, "a number in [0, 1)"),
    ("optimizer", "lion", "one of adam, sgd, adamw"),
])
def test_recipe_values_the_trainer_cannot_use_are_refused(study_space: SearchSpace, key: str, value: Any,
                                                          rule: str) -> None:
    with pytest.raises(SpaceError) as info:
        study_space.with_base({key: value})
    assert str(info.value) == f"{key}: {value!r} is not a legal value; {key} must be {rule}"


def _builtin_with(extra: str, old: str = "", new: str = "") -> str:
    text = builtin_path("vgg16").read_text(encoding="utf-8")
    if old:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text + extra


@pytest.mark.parametrize("text, message", [
    pytest.param(_builtin_with("\n[presets.bad]\nlabel_smoothing = 1.0\n"),
                 "presets.bad.label_smoothing: 1.0 is not a legal value; label_smoothing must be a number in [0, 1)",
                 id="preset-bad-smoothing"),
    pytest.param(_builtin_with('\n[presets.bad]\nschedule = "step"\n'),
                 "presets.bad.schedule: 'step' is not a legal value; schedule must be one of constant, cosine",
                 id="preset-bad-schedule"),
    pytest.param(_builtin_with("\n[presets.bad]\npatience = 50\n"),
                 "presets.bad.patience: 50 is not a legal value; legal: [0, 20]", id="preset-outside-the-axis"),
    pytest.param(_builtin_with("\n[presets.bad]\nepochs = 0\n"),
                 "presets.bad.epochs: 0 is not a legal value; epochs must be an integer >= 1", id="preset-epochs"),
    pytest.param(_builtin_with('\n[presets]\nbad = "on"\n'), "presets.bad: must be a table, but got 'on'",
                 id="preset-not-table"),
    pytest.param(_builtin_with('preset = "modern"\n', 'model = "vgg16"\n', 'model = "vgg16"\npreset = "modern"\n'),
                 "preset: a declaration offers presets as [presets.NAME] tables; choose one with --preset NAME",
                 id="preset-chosen-in-the-file"),
    pytest.param(_builtin_with("", "label_smoothing = 0.0\n", "label_smoothing = 1.5\n"),
                 "base.label_smoothing: 1.5 is not a legal value; label_smoothing must be a number in [0, 1)",
                 id="base-bad-smoothing"),
    pytest.param(_builtin_with("", "[params.label_smoothing]\ntype = \"float\"\nlow = 0.0\nhigh = 0.2",
                               "[params.label_smoothing]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0"),
                 "params.label_smoothing.high: 1.0 is not a legal value; label_smoothing must be a number in [0, 1)",
                 id="axis-bad-smoothing"),
    pytest.param(_builtin_with("", '[params.batch_norm]\n# BatchNormalization after every convolution (conv without '
                                   'bias -> BN -> ReLU).\ntype = "bool"',
                               '[params.batch_norm]\ntype = "choice"\nvalues = [0, 1]'),
                 "params.batch_norm.values: 0 is not a legal value; batch_norm must be true or false",
                 id="bool-axis-as-numbers"),
])
def test_bad_recipe_declarations_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_toml(path)
    assert str(info.value) == f"{path}: {message}"


def test_preset_key_in_a_dict_must_name_a_declared_preset(space: SearchSpace) -> None:
    data = space.to_dict() | {"preset": "fast"}
    with pytest.raises(SpaceError, match=r": preset: 'fast' is not a preset declared under \[presets\]; known: "
                                         r"modern$"):
        SearchSpace.from_dict(data, source="config.toml")
