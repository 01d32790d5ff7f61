"""One source per setting: a config field declares its default, help, choices and bounds once.

A config is a frozen dataclass whose fields are declared with :func:`setting`::

    @dataclass(frozen=True)
    class Config:
        reader: Reader = setting("openslide", help="Pixel decoder: ...")  # choices: the Literal
        batch_size: int | None = setting(None, min=1, help="Windows per forward pass.")
        sigma: float | None = setting(None, positive=True, help="Gaussian blending sigma.")

        def __post_init__(self) -> None:
            validate_fields(self)  # bounds and choices; checks across fields follow

:func:`validate_fields` checks each field against what it declares and raises a one-line
:class:`~wsiseg.errors.ConfigError`; ``wsiseg.cli.options`` builds the command-line options from
the same declarations. Neither this module nor a config needs click or torch.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from wsiseg.errors import ConfigError

#: Key of a field's :class:`Setting` in its ``dataclasses.field`` metadata.
METADATA_KEY = "wsiseg.setting"

#: The default messages, by what was violated; ``Setting.error`` replaces them for one field.
MESSAGES = {
    "choices": "unknown {label} {value!r}; use {choices}",
    "positive": "{label} must be positive, got {value}",
    "range": "{label} must be between {min} and {max}{unit}, got {value}",
    "min": "{label} must be at least {min}{unit}, got {value}",
    "min0": "{label} must be 0 or more{unit}, got {value}",
    "max": "{label} must be at most {max}{unit}, got {value}",
}


@dataclass(frozen=True)
class Setting:
    """What a config field declares besides its default and type (see :func:`setting`)."""

    help: str
    flag: str | None = None
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    positive: bool = False
    unit: str = ""
    label: str | None = None
    error: str | None = None
    metavar: str | None = None
    cli: bool = True
    affects_map: bool | None = None


def setting(default: Any = dataclasses.MISSING, *, help: str,
            default_factory: Callable[[], Any] | None = None, flag: str | None = None,
            choices: tuple[Any, ...] | None = None, min: float | None = None,
            max: float | None = None, positive: bool = False, unit: str = "",
            label: str | None = None, error: str | None = None, metavar: str | None = None,
            cli: bool = True, affects_map: bool | None = None) -> Any:
    """A dataclass field that declares a setting once.

    - ``help``: what it does, as ``--help`` shows it;
    - ``flag``: its command-line option when not ``--field-name`` (``"--x/--no-x"`` for a
      switch that is on by default); ``cli=False``: never a command-line option;
    - ``choices``: the values it takes; by default those of its ``Literal`` type;
    - ``min``, ``max`` (inclusive) and ``positive`` (``> 0``): bounds of a number; ``unit``
      follows a bound in messages (``"png size must be at least 16 px"``);
    - ``label``: its name in messages (default: the field's name with spaces); ``error``: a
      message of its own, a format string of ``label``, ``value``, ``choices``, ``min``,
      ``max`` and ``unit``;
    - ``metavar``: the placeholder of its value in ``--help``;
    - ``affects_map``: whether a prediction setting changes the map (see
      ``wsiseg.inference.config``).

    A ``bool`` setting is a flag on the command line. ``None``, where the type allows it, is
    never checked against bounds or choices: it means "not given".
    """
    spec = Setting(help=help, flag=flag, choices=None if choices is None else tuple(choices),
                   min=min, max=max, positive=positive, unit=unit, label=label, error=error,
                   metavar=metavar, cli=cli, affects_map=affects_map)
    metadata = {METADATA_KEY: spec}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SettingField:
    """A field of a config, with its declaration and its type resolved."""

    name: str
    spec: Setting
    #: The type of its values: ``int``, ``float``, ``str``, ``bool``, or the type as annotated
    #: when it is none of these (a tuple, say); for a ``Literal``, the type of its values.
    kind: Any
    optional: bool  # the type allows None
    choices: tuple[Any, ...] | None
    default: Any  # dataclasses.MISSING when it has none (or a factory)
    has_default: bool

    @property
    def label(self) -> str:
        return self.spec.label or self.name.replace("_", " ")


_FIELDS: dict[type, tuple[SettingField, ...]] = {}


def setting_fields(cls: type) -> tuple[SettingField, ...]:
    """The fields of the config dataclass ``cls``, in order; every one must be declared with
    :func:`setting` (a ``TypeError`` otherwise, when the class is first used)."""
    if cls not in _FIELDS:
        _FIELDS[cls] = _setting_fields(cls)
    return _FIELDS[cls]


def _setting_fields(cls: type) -> tuple[SettingField, ...]:
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(METADATA_KEY)
        if not isinstance(spec, Setting):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with wsiseg.settings.setting")
        kind, optional, literal = _unwrap(hints[f.name])
        choices = spec.choices if spec.choices is not None else literal
        if f.default is not dataclasses.MISSING:
            default, has_default = f.default, True
        elif f.default_factory is not dataclasses.MISSING:
            default, has_default = f.default_factory(), True
        else:
            default, has_default = dataclasses.MISSING, False
        out.append(SettingField(f.name, spec, kind, optional, choices, default, has_default))
    return tuple(out)


def _unwrap(hint: Any) -> tuple[Any, bool, tuple[Any, ...] | None]:
    """``(kind, optional, Literal choices)`` of a field's type."""
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional = len(args) < len(get_args(hint))
        if len(args) != 1:
            return hint, optional, None
        hint = args[0]
    if get_origin(hint) is Literal:
        values = get_args(hint)
        return type(values[0]), optional, values
    return hint, optional, None


def validate_fields(obj: Any) -> None:
    """Check each field of the config ``obj`` against its bounds and choices; raise a one-line
    :class:`~wsiseg.errors.ConfigError` naming the first that is not met."""
    for f in setting_fields(type(obj)):
        value = getattr(obj, f.name)
        if value is None and f.optional:
            continue
        problem = _problem(f, value)
        if problem is not None:
            raise ConfigError(_message(f, problem, value))


def _problem(f: SettingField, value: Any) -> str | None:
    """Which of :data:`MESSAGES` ``value`` violates, or None."""
    spec = f.spec
    if f.choices is not None:
        return None if value in f.choices else "choices"
    if spec.positive and not value > 0:
        return "positive"
    low_ok = spec.min is None or value >= spec.min
    high_ok = spec.max is None or value <= spec.max
    if low_ok and high_ok:
        return None
    if spec.min is not None and spec.max is not None:
        return "range"
    if spec.min is not None:
        return "min0" if spec.min == 0 else "min"
    return "max"


def _message(f: SettingField, problem: str, value: Any) -> str:
    spec = f.spec
    return (spec.error or MESSAGES[problem]).format(
        label=f.label, value=value, unit=f" {spec.unit}" if spec.unit else "",
        choices=", ".join(str(c) for c in f.choices or ()),
        min=_number(spec.min), max=_number(spec.max),
    )


def _number(bound: float | None) -> str:
    return "" if bound is None else f"{bound:g}"

