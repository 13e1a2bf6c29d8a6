"""Search spaces: one TOML declaration rendered to Optuna, Keras Tuner and the study's staged grid.

A declaration is validated once, where it enters (``SearchSpace.from_toml``); every error names the file,
the key and what to change. After that the engines trust it.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tuning.data.splits import parse_split
from tuning.errors import SpaceError, UnknownNameError

Value = bool | int | float | str
#: Keys of ``[base]`` that are run settings rather than searchable parameters.
SETTINGS = ("epochs",)
#: Parameters the trainer and the built-in models read; a declaration must give each (one value fixes it).
REQUIRED = ("learning_rate", "optimizer", "batch_size", "image_size", "split", "augmentation", "dropout", "width",
            "dense_units")


#: The optimisers ``tuning.train.compile_model`` builds; any other name would be recorded but not trained.
OPTIMIZERS = ("adam", "sgd", "adamw")
#: Learning-rate schedules ``compile_model`` builds: the study's constant rate, or cosine decay after a warm-up.
SCHEDULES = ("constant", "cosine")
#: What follows the last convolution: the study's ``flatten``, or global average pooling (``gap``).
HEADS = ("flatten", "gap")
#: How much of a pretrained backbone trains after its ``head_epochs`` (``tuning.models.backbones``): nothing,
#: its top block, its later half or all of it (BatchNorm layers stay frozen in every case).
UNFREEZE = ("none", "top", "half", "all")
#: The weights a backbone starts from besides a file path: ImageNet's (downloaded by Keras) or random.
WEIGHTS = ("imagenet", "none")

#: The two-phase fine-tuning keys with the values that mean "one phase, backbone frozen throughout"; only the
#: backbone spaces declare them (``params.get(key, FINE_TUNE_DEFAULTS[key])``).
FINE_TUNE_DEFAULTS: dict[str, Value] = {"unfreeze": "none", "head_epochs": 0, "fine_tune_lr_factor": 1.0}

#: The modern-recipe keys with the study's own values. A declaration may leave any of them out (a space
#: written before the recipe existed trains exactly as before); the models and the trainer fall back on
#: these (``params.get(key, RECIPE_DEFAULTS[key])``), so "off" is spelled once, here.
RECIPE_DEFAULTS: dict[str, Value] = {
    "batch_norm": False,
    "head": "flatten",
    "flip": False,
    "crop": 0.0,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "schedule": "constant",
    "warmup_epochs": 0,
    "patience": 0,
}


@dataclass(frozen=True)
class Interval:
    """Numbers between ``low`` and ``high`` (``None``: unbounded); ``integer`` also refuses floats (a count or
    a size: TensorFlow fails deep inside on 32.5 px or a batch of 0)."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"  # which ends belong: "both", "left", "right" or "neither"
    integer: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and not (value >= self.low if self.closed in ("both", "left") else value > self.low):
            return False
        return self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.high is None:
            return f"{kind} {'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false`` (a switch that a 0/1 or a string would silently turn into something else)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def describe(self) -> str:
        return f"one of {', '.join(self.values)}"


#: What the trainer and the built-in models accept for each known key, declared once (scikit-learn's
#: ``_param_validation`` style) and checked for base values, every value a parameter can take and budget
#: overrides, so a bad value stops the load instead of crashing a trial (or, worse, training something else).
#: ``split`` and ``augmentation`` are checked by their own parsers (``parse_split``, the declared presets).
CONSTRAINTS: dict[str, Interval | Options | Flag] = {
    "optimizer": Options(OPTIMIZERS),
    "learning_rate": Interval(0, None, closed="neither"),
    "momentum": Interval(0, 1),  # Keras' SGD refuses anything outside [0, 1]
    "dropout": Interval(0, 1, closed="left"),  # a rate of 1 drops every unit
    "width": Interval(0, None, closed="neither"),
    "dense_units": Interval(1, None, integer=True),
    "batch_size": Interval(1, None, integer=True),
    "image_size": Interval(1, None, integer=True),
    "epochs": Interval(1, None, integer=True),
    # The modern recipe (RECIPE_DEFAULTS holds the study's value of each).
    "batch_norm": Flag(),
    "head": Options(HEADS),
    "flip": Flag(),
    "crop": Interval(0, 1, closed="left"),  # the share of the image's area a random crop may cut away
    "weight_decay": Interval(0, None),
    "label_smoothing": Interval(0, 1, closed="left"),  # 1 would make every target uniform
    "schedule": Options(SCHEDULES),
    "warmup_epochs": Interval(0, None, integer=True),
    "patience": Interval(0, None, integer=True),  # 0: no early stopping
    # Pretrained backbones, fine-tuned in two phases (FINE_TUNE_DEFAULTS: one frozen phase).
    "unfreeze": Options(UNFREEZE),
    "head_epochs": Interval(0, None, integer=True),
    "fine_tune_lr_factor": Interval(0, None, closed="neither"),
}


def check_constraint(key: str, value: Any, where: str) -> None:
    """Raise the one message shape for a value the trainer or models cannot use; unknown keys pass."""
    constraint = CONSTRAINTS.get(key)
    if constraint is not None and not constraint.accepts(value):
        raise SpaceError(f"{where}: {value!r} is not a legal value; {key} must be {constraint.describe()}")


def _check_param_constraints(param: Param) -> None:
    """Every value ``param`` can take satisfies its key's constraint (for a range: both ends, which is
    enough because every constraint is an interval or a set)."""
    where = f"params.{param.name}"
    if isinstance(param, (Float, Int)):
        check_constraint(param.name, param.low, f"{where}.low")
        check_constraint(param.name, param.high, f"{where}.high")
        for value in getattr(param, "grid", None) or ():
            check_constraint(param.name, value, f"{where}.grid")
        if isinstance(param, Float) and param.name in CONSTRAINTS and getattr(CONSTRAINTS[param.name], "integer",
                                                                              False):
            raise SpaceError(f"{where}.type: 'float' is not a legal value; {param.name} must be "
                             f"{CONSTRAINTS[param.name].describe()}")
    elif isinstance(param, Choice):
        for value in param.values:
            check_constraint(param.name, value, f"{where}.values")
    elif param.name in CONSTRAINTS and not isinstance(CONSTRAINTS[param.name], Flag):
        raise SpaceError(f"{where}.type: 'bool' is not a legal value; {param.name} must be "
                         f"{CONSTRAINTS[param.name].describe()}")


def _table(value: Any, where: str) -> Mapping[str, Any]:
    """A TOML table, or the error a hand-written ``x = 5`` where ``[x]`` was meant deserves."""
    if not isinstance(value, Mapping):
        raise SpaceError(f"{where}: must be a table, but got {value!r}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise SpaceError(f"{where}: must be a list of parameter names, but got {value!r}")
    return tuple(value)


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise SpaceError(f"{where}: unknown key '{key}'; known: {', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class _Param:
    """Fields and behaviour shared by every parameter kind."""

    name: str
    when: Mapping[str, tuple[Value, ...]] = field(default_factory=dict, kw_only=True)

    def active(self, values: Mapping[str, Value]) -> bool:
        """Whether the parameter exists given the values chosen for the parameters it depends on."""
        return all(values.get(parent) in allowed for parent, allowed in self.when.items())

    def _base_dict(self, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": kind}
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out


@dataclass(frozen=True)
class Float(_Param):
    """A real-valued parameter; ``grid`` lists the values a staged or grid search tries."""

    low: float
    high: float
    log: bool = field(default=False, kw_only=True)
    step: float | None = field(default=None, kw_only=True)
    grid: tuple[float, ...] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise SpaceError(f"low <= high must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.step is not None:
            raise SpaceError("log and step cannot be used together (Optuna forbids it); drop one of them")
        if self.log and self.low <= 0:
            raise SpaceError(f"log needs low > 0, but got low={self.low}")
        if self.step is not None and self.step <= 0:
            raise SpaceError(f"step must be > 0, but got step={self.step}")
        for v in self.grid or ():
            if not self.contains(v):
                raise SpaceError(f"grid value {v} is outside [{self.low}, {self.high}]")

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def grid_values(self) -> tuple[float, ...]:
        if self.grid:
            return self.grid
        if self.step is None:
            raise SpaceError(f"params.{self.name} has neither grid nor step, so it has no grid; add grid = [...]")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return tuple(round(self.low + i * self.step, 12) for i in range(n + 1))

    def suggest(self, trial: Any) -> float:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def distribution(self) -> Any:
        """The Optuna distribution, for trials recorded from other engines."""
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def define(self, hp: Any) -> Any:
        return hp.Float(self.name, self.low, self.high, step=self.step, sampling="log" if self.log else "linear")

    def to_dict(self) -> dict[str, Any]:
        out = self._base_dict("float") | {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        if self.grid:
            out["grid"] = list(self.grid)
        return out


@dataclass(frozen=True)
class Int(_Param):
    """An integer parameter in ``[low, high]`` on a ``step`` lattice."""

    low: int
    high: int
    log: bool = field(default=False, kw_only=True)
    step: int = field(default=1, kw_only=True)

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise SpaceError(f"low <= high must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.step != 1:
            raise SpaceError("log and step cannot be used together (Optuna forbids it); drop one of them")
        if self.log and self.low <= 0:
            raise SpaceError(f"log needs low > 0, but got low={self.low}")
        if self.step < 1:
            raise SpaceError(f"step must be >= 1, but got step={self.step}")

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def grid_values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def suggest(self, trial: Any) -> int:
        return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)

    def distribution(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def define(self, hp: Any) -> Any:
        return hp.Int(self.name, self.low, self.high, step=self.step, sampling="log" if self.log else "linear")

    def to_dict(self) -> dict[str, Any]:
        out = self._base_dict("int") | {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step != 1:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Choice(_Param):
    """One of a list of values (strings, numbers or booleans)."""

    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise SpaceError("values must not be empty")
        if len(set(self.values)) != len(self.values):
            raise SpaceError(f"values must be distinct, but got {list(self.values)}")
        kinds = {"bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else "str"
                 for v in self.values}
        if len(kinds) > 1:
            raise SpaceError(f"values must all be of one kind, but got {list(self.values)}")

    def contains(self, value: Any) -> bool:
        return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values)

    def grid_values(self) -> tuple[Value, ...]:
        return self.values

    def suggest(self, trial: Any) -> Value:
        return trial.suggest_categorical(self.name, list(self.values))

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.values))

    def define(self, hp: Any) -> Any:
        return hp.Choice(self.name, list(self.values))

    def to_dict(self) -> dict[str, Any]:
        return self._base_dict("choice") | {"values": list(self.values)}


@dataclass(frozen=True)
class Bool(_Param):
    """A switch."""

    def contains(self, value: Any) -> bool:
        return isinstance(value, bool)

    def grid_values(self) -> tuple[bool, ...]:
        return (False, True)

    def suggest(self, trial: Any) -> bool:
        return trial.suggest_categorical(self.name, [False, True])

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution([False, True])

    def define(self, hp: Any) -> Any:
        return hp.Boolean(self.name)

    def to_dict(self) -> dict[str, Any]:
        return self._base_dict("bool")


Param = Float | Int | Choice | Bool
_KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "float": (Float, ("low", "high", "log", "step", "grid")),
    "int": (Int, ("low", "high", "log", "step")),
    "choice": (Choice, ("values",)),
    "bool": (Bool, ()),
}


def param_from_dict(name: str, table: Mapping[str, Any]) -> Param:
    """Build one parameter from its TOML table; raises SpaceError naming the problem."""
    table = _table(table, f"params.{name}")
    kind = table.get("type")
    if kind not in _KINDS:
        raise SpaceError(f"unknown type {kind!r}; known: {', '.join(_KINDS)}")
    cls, keys = _KINDS[kind]
    _check_keys(table, ("type", "when", *keys), f"params.{name}")
    when_table = table.get("when", {})
    if not isinstance(when_table, Mapping):
        raise SpaceError(f"params.{name}.when: must be a table of parent values, e.g. when = "
                         f"{{ optimizer = [\"sgd\"] }}, but got {when_table!r}")
    when = {k: tuple(v if isinstance(v, list) else [v]) for k, v in when_table.items()}
    kwargs = {k: table[k] for k in keys if k in table}
    for key, value in kwargs.items():
        if key in ("values", "grid"):
            if not isinstance(value, list):
                raise SpaceError(f"params.{name}.{key}: must be a list, but got {value!r}")
            kwargs[key] = tuple(value)
        elif key == "log":
            if not isinstance(value, bool):
                raise SpaceError(f"params.{name}.log: must be true or false, but got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)):
            wanted = "an integer" if kind == "int" else "a number"
            raise SpaceError(f"params.{name}.{key}: must be {wanted}, but got {value!r}")
    try:
        return cls(name, when=when, **kwargs)
    except TypeError as exc:  # a required key such as low/high/values is missing
        raise SpaceError(f"missing key: {exc}") from None


#: The magnitudes an ``[augmentation.NAME]`` preset may set.
PRESET_KEYS = ("shift", "rotation", "shear", "zoom")


@dataclass(frozen=True)
class Augmentation:
    """Magnitudes of one augmentation preset: shift/zoom as fractions, rotation in degrees, shear factor;
    plus the recipe's ``flip`` (horizontal) and ``crop`` (random resized crop cutting away up to that share
    of the area), which come from their own parameters so that they combine with any of the study's presets
    (``SearchSpace.augmentation_for``)."""

    name: str
    shift: float = 0.0
    rotation: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    flip: bool = False
    crop: float = 0.0

    @property
    def is_identity(self) -> bool:
        return not (self.shift or self.rotation or self.shear or self.zoom or self.flip or self.crop)


@dataclass(frozen=True)
class Budget:
    """How much compute one search gets, and which parameters it pins to save it."""

    name: str
    trials: int
    epochs: int
    fixed: Mapping[str, Value] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    """A validated declaration: parameters, the study's base point, presets, staged order and budgets."""

    model: str
    params: Mapping[str, Param]
    base: Mapping[str, Value]
    augmentations: Mapping[str, Augmentation]
    search: tuple[str, ...]
    staged_order: tuple[str, ...]
    budgets: Mapping[str, Budget]
    source: str = "<dict>"
    #: ``[presets.NAME]``: named sets of base overrides (``tuning search --preset NAME``).
    presets: Mapping[str, Mapping[str, Value]] = field(default_factory=dict)
    #: The preset already applied to ``base`` ("" for none); a record, so ``config.toml`` says which one.
    preset: str = ""

    # ----- loading and saving -------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: Path, *, display: str | None = None) -> SearchSpace:
        """Load and validate a declaration; ``display`` is the name errors use for the file."""
        where = display or str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SpaceError(f"{where}: no such search-space file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SpaceError(f"{where}: not valid TOML ({exc})") from None
        if "preset" in data:  # in a study's config.toml it records what --preset did; a declaration only offers
            raise SpaceError(f"{where}: preset: a declaration offers presets as [presets.NAME] tables; choose one "
                             "with --preset NAME")
        return cls.from_dict(data, source=where)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> SearchSpace:
        """Validate a plain dict (the parsed TOML, or ``to_dict()`` output)."""
        try:
            return cls._from_dict(data, source)
        except (SpaceError, UnknownNameError) as exc:
            # An unknown name inside a declaration (a preset, a parameter in search.params) is a fault of the
            # file, so it is reported like every other one: as a SpaceError that names the file.
            raise SpaceError(f"{source}: {exc}") from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], source: str) -> SearchSpace:
        _check_keys(data, ("model", "base", "params", "augmentation", "search", "staged", "budgets", "presets",
                           "preset"), "top level")
        if not isinstance(data.get("model"), str):
            raise SpaceError("model: missing; add model = \"<registered model name>\"")
        params: dict[str, Param] = {}
        for name, table in _table(data.get("params", {}), "params").items():
            try:
                param = param_from_dict(name, table)
            except SpaceError as exc:
                raise SpaceError(exc.args[0] if str(exc).startswith("params.") else f"params.{name}: {exc}") from None
            _check_param_constraints(param)
            for parent, allowed in param.when.items():
                if parent not in params:
                    raise SpaceError(
                        f"params.{name}: condition on '{parent}', which is not a parameter declared above it"
                    )
                bad = [v for v in allowed if not params[parent].contains(v)]
                if bad:
                    raise SpaceError(f"params.{name}: condition value {bad[0]!r} is not a legal value of '{parent}'")
            params[name] = param
        missing = [name for name in REQUIRED if name not in params]
        if missing:
            raise SpaceError(f"params.{missing[0]}: missing; training needs it (a choice with one value fixes it)")

        augmentations: dict[str, Augmentation] = {}
        for name, table in _table(data.get("augmentation", {}), "augmentation").items():
            table = _table(table, f"augmentation.{name}")
            _check_keys(table, PRESET_KEYS, f"augmentation.{name}")
            for key, value in table.items():
                if not isinstance(value, (int, float)) or value < 0:
                    raise SpaceError(f"augmentation.{name}.{key}: must be a number >= 0, but got {value!r}")
            shift, rotation, shear, zoom = (float(table.get(k, 0.0)) for k in PRESET_KEYS)
            augmentations[name] = Augmentation(name, shift, rotation, shear, zoom)

        base = dict(_table(data.get("base", {}), "base"))
        _check_keys(base, (*params, *SETTINGS), "base")
        for name, param in params.items():
            if name not in base:
                raise SpaceError(f"base.{name}: missing; every parameter needs a starting value")
            check_constraint(name, base[name], f"base.{name}")
            _check_value(param, base[name], f"base.{name}")
        if "epochs" not in base:
            raise SpaceError("base.epochs: missing; add epochs = <an integer >= 1>")
        check_constraint("epochs", base["epochs"], "base.epochs")

        search_table = _table(data.get("search", {}), "search")
        _check_keys(search_table, ("params",), "search")
        search = _names(search_table["params"], "search.params") if "params" in search_table else tuple(params)
        staged_table = _table(data.get("staged", {}), "staged")
        _check_keys(staged_table, ("order",), "staged")
        order = _names(staged_table["order"], "staged.order") if "order" in staged_table else search
        for where, names in (("search.params", search), ("staged.order", order)):
            for name in names:
                if name not in params:
                    raise UnknownNameError(f"parameter in {where}:", name, list(params))
        for name in order:
            params[name].grid_values()

        budgets: dict[str, Budget] = {}
        for name, table in _table(data.get("budgets", {}), "budgets").items():
            table = _table(table, f"budgets.{name}")
            _check_keys(table, ("trials", "epochs", "fixed"), f"budgets.{name}")
            for key in ("trials", "epochs"):
                if not (isinstance(table.get(key), int) and not isinstance(table[key], bool) and table[key] >= 1):
                    raise SpaceError(f"budgets.{name}.{key}: {table.get(key)!r} is not a legal value; {key} must be "
                                     "an integer >= 1")
            fixed = dict(_table(table.get("fixed", {}), f"budgets.{name}.fixed"))
            for key, value in fixed.items():
                if key not in params:
                    raise UnknownNameError(f"parameter in budgets.{name}.fixed:", key, list(params))
                check_constraint(key, value, f"budgets.{name}.fixed.{key}")
                _check_value(params[key], value, f"budgets.{name}.fixed.{key}")
            budgets[name] = Budget(name, table["trials"], table["epochs"], fixed)

        if "augmentation" in params:
            for preset in params["augmentation"].grid_values():
                if preset not in augmentations:
                    raise UnknownNameError("augmentation preset in params.augmentation:", str(preset),
                                           list(augmentations))
        if "split" in params:
            for scheme in params["split"].grid_values():
                parse_split(str(scheme), where="params.split")

        presets: dict[str, dict[str, Value]] = {}
        for name, table in _table(data.get("presets", {}), "presets").items():
            table = dict(_table(table, f"presets.{name}"))
            _check_keys(table, (*params, *SETTINGS), f"presets.{name}")
            for key, value in table.items():
                check_constraint(key, value, f"presets.{name}.{key}")
                if key in params:
                    _check_value(params[key], value, f"presets.{name}.{key}")
            presets[name] = table
        preset = data.get("preset", "")
        if preset != "" and (not isinstance(preset, str) or preset not in presets):
            raise SpaceError(f"preset: {preset!r} is not a preset declared under [presets]; known: "
                             f"{', '.join(sorted(presets)) or '(none)'}")
        return cls(data["model"], params, base, augmentations, search, order, budgets, source, presets, preset)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that ``from_dict`` turns back into an equal space."""
        aug = {
            a.name: {k: getattr(a, k) for k in PRESET_KEYS if getattr(a, k)}
            for a in self.augmentations.values()
        }
        # Both only when used, so a space without presets serialises as it did before they existed (and a
        # study begun then still resumes: resume compares this dict).
        extra: dict[str, Any] = {"preset": self.preset} if self.preset else {}
        if self.presets:
            extra["presets"] = {name: dict(table) for name, table in self.presets.items()}
        return {
            "model": self.model,
            "base": dict(self.base),
            "params": {name: p.to_dict() for name, p in self.params.items()},
            "augmentation": aug,
            "search": {"params": list(self.search)},
            "staged": {"order": list(self.staged_order)},
            "budgets": {
                b.name: {"trials": b.trials, "epochs": b.epochs, "fixed": dict(b.fixed)} for b in self.budgets.values()
            },
        } | extra

    # ----- narrowing ----------------------------------------------------------------------------------
    def with_budget(self, name: str) -> tuple[SearchSpace, Budget]:
        """The space with the budget's pinned values moved into ``base`` and out of the search."""
        if name not in self.budgets:
            raise UnknownNameError("budget", name, list(self.budgets))
        budget = self.budgets[name]
        space = self.with_base({**budget.fixed, "epochs": budget.epochs})
        return replace(space, search=tuple(p for p in self.search if p not in budget.fixed)), budget

    def with_preset(self, name: str) -> SearchSpace:
        """The space with preset ``name``'s values as its base (validated on load), recorded as applied.

        Applied before a budget and ``--epochs``, so those still pin what they pin; the staged order and the
        search list are untouched, so a preset moves the point every search starts from, nothing else.
        """
        if name not in self.presets:
            raise UnknownNameError("preset", name, list(self.presets) or ["(none declared)"])
        return replace(self.with_base(self.presets[name]), preset=name)

    def with_search(self, names: Sequence[str]) -> SearchSpace:
        """The same space searching exactly ``names`` (in declaration order)."""
        for name in names:
            if name not in self.params:
                raise UnknownNameError("parameter", name, list(self.params))
        return replace(self, search=tuple(p for p in self.params if p in names))

    def with_split(self, scheme: str) -> SearchSpace:
        """The same space with ``scheme`` as its split (``--split``): any valid scheme, not only the axis's values."""
        parse_split(scheme, where="--split")
        params = dict(self.params)
        param = params.get("split")
        if isinstance(param, Choice) and not param.contains(scheme):
            params["split"] = replace(param, values=(*param.values, scheme))
        return replace(self, params=params, base={**self.base, "split": scheme})

    def with_weights(self, weights: str) -> SearchSpace:
        """The same space starting from ``weights`` (``--weights``): ``imagenet``, ``none`` or a weights file,
        recorded as an absolute path (a trial in another process or directory finds the same file) and added to
        the axis's values as ``with_split`` adds a scheme. Whether the file exists and fits is the backbone's
        check (``tuning.models.backbones.check_weights``), made before the first trial."""
        param = self.params.get("weights")
        if not isinstance(param, Choice):
            raise SpaceError(f"--weights: {self.source} declares no weights parameter; --weights applies to the "
                             "pretrained backbones (see 'tuning models list')")
        value = weights if weights in WEIGHTS else Path(os.path.abspath(Path(weights).expanduser())).as_posix()
        params = dict(self.params)
        if not param.contains(value):
            params["weights"] = replace(param, values=(*param.values, value))
        return replace(self, params=params, base={**self.base, "weights": value})

    def with_base(self, overrides: Mapping[str, Value]) -> SearchSpace:
        """The same space with some starting values replaced (validated like the file's own)."""
        for key, value in overrides.items():
            if key in SETTINGS:
                check_constraint(key, value, key)
            elif key in self.params:
                check_constraint(key, value, key)
                _check_value(self.params[key], value, key)
            else:
                raise UnknownNameError("parameter", key, [*self.params, *SETTINGS])
        return replace(self, base={**self.base, **overrides})

    # ----- rendering ----------------------------------------------------------------------------------
    def resolve(self, chosen: Mapping[str, Value]) -> dict[str, Value]:
        """Full parameter values: ``chosen`` where given, base elsewhere, inactive conditionals dropped."""
        values: dict[str, Value] = {}
        for name, param in self.params.items():
            if param.active(values):
                values[name] = chosen.get(name, self.base[name])
        return values

    def suggest_optuna(self, trial: Any) -> dict[str, Value]:
        """Ask an Optuna trial for every searched, active parameter (define-by-run)."""
        values: dict[str, Value] = {}
        for name, param in self.params.items():
            if param.active(values):
                values[name] = param.suggest(trial) if name in self.search else self.base[name]
        return values

    def define_kerastuner(self, hp: Any) -> dict[str, Value]:
        """Declare the searched parameters on Keras Tuner ``HyperParameters`` and return the full values."""
        values: dict[str, Value] = {}
        # The searched conditions under which each parameter can exist. A conditional parameter is declared
        # inside them even when the current values switch it off: Keras Tuner's oracles sample only what was
        # declared, and a fresh ``HyperParameters`` holds each choice's first value (optimizer "adam"), so
        # declaring it only when active would hide ``momentum`` from the search.
        scopes: dict[str, list[tuple[str, tuple[Value, ...]]]] = {}
        for name, param in self.params.items():
            scope: list[tuple[str, tuple[Value, ...]]] = []
            for parent, allowed in param.when.items():
                if parent not in scopes or (parent not in self.search and self.base[parent] not in allowed):
                    break  # never active in this search
                inherited = [*scopes[parent], (parent, allowed)] if parent in self.search else scopes[parent]
                scope += [c for c in inherited if c not in scope]
            else:
                scopes[name] = scope
                if name in self.search:
                    with ExitStack() as stack:
                        for parent, allowed in scope:
                            stack.enter_context(hp.conditional_scope(parent, list(allowed)))
                        value = param.define(hp)
                else:
                    value = self.base[name]
                if param.active(values):
                    values[name] = value
        return values

    def staged_stages(self) -> list[tuple[str, tuple[Value, ...]]]:
        """The one-factor-at-a-time plan: each axis of ``staged.order`` with the values it tries."""
        return [(name, self.params[name].grid_values()) for name in self.staged_order]

    def augmentation_for(self, params: Mapping[str, Any]) -> Augmentation:
        """The augmentation one trial trains through: its preset plus its ``flip`` and ``crop`` values."""
        preset = self.augmentation(str(params["augmentation"]))
        return replace(preset, flip=bool(params.get("flip", RECIPE_DEFAULTS["flip"])),
                       crop=float(params.get("crop", RECIPE_DEFAULTS["crop"])))

    def augmentation(self, name: str) -> Augmentation:
        if name not in self.augmentations:
            raise UnknownNameError("augmentation preset", name, list(self.augmentations))
        return self.augmentations[name]

    def schemes(self) -> tuple[str, ...]:
        """Every split scheme a study over this space can train with: the base one and, when searched, the axis."""
        schemes = [str(self.base["split"])]
        if "split" in self.search:
            schemes += [str(s) for s in self.params["split"].grid_values() if str(s) not in schemes]
        return tuple(schemes)

    def scored_val_fraction(self) -> float | None:
        """With the split searched (the staged study's split stage), the validation share every scheme has:
        trials are scored on those images only, so schemes are compared on the same images. None otherwise."""
        schemes = self.schemes()
        return min(parse_split(s)[1] for s in schemes) if len(schemes) > 1 else None

    def test_fraction(self) -> float:
        """The held-out test share: the largest any searchable split asks for, so no trial ever sees it."""
        return max(parse_split(s)[2] for s in self.schemes())


def _check_value(param: Param, value: Any, where: str) -> None:
    if not param.contains(value):
        legal = (
            ", ".join(map(str, param.values)) if isinstance(param, Choice)
            else "true or false" if isinstance(param, Bool)
            else f"[{param.low}, {param.high}]"
        )
        raise SpaceError(f"{where}: {value!r} is not a legal value; legal: {legal}")


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A built-in declaration by name (``vgg16``) or a user's TOML file by path."""
    from search_spaces import builtin_names, builtin_path

    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        return SearchSpace.from_toml(Path(text))
    path = builtin_path(text)
    if path is None:
        raise UnknownNameError("search space", text, builtin_names())
    return SearchSpace.from_toml(path, display=f"search_spaces/{text}.toml")
