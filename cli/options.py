"""Command-line options built from a config's fields, and the config built from them.

``@options_from(Config)`` adds one option per field declared with
:func:`wsiseg.settings.setting` (its help, default, choices and bounds); the command then makes
its config with ``config_from(Config, params)`` from the values click passes it::

    @click.command()
    @options_from(PredictConfig, exclude=("out",))
    @handle_errors
    def predict(**params: Any) -> None:
        config = config_from(PredictConfig, params, progress=True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click

from wsiseg.errors import ConfigError
from wsiseg.settings import SettingField, setting_fields

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_SCALARS = (bool, int, float, str)


def options_from(cls: type, *, exclude: Iterable[str] = (),
                 overrides: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> Callable[[F], F]:
    """A decorator adding an option for each field of the config dataclass ``cls``, in field
    order, except those in ``exclude`` and those declared ``cli=False``.

    An option is named after its field (``--patch-size`` for ``patch_size``, or its ``flag``)
    and passes its value under the field's name. ``overrides`` gives, by field name, keyword
    arguments of ``click.option`` that replace the generated ones (a ``callback`` that parses
    the text, a ``type`` such as ``click.Path()``).
    """
    skip = set(exclude)
    known = {f.name for f in setting_fields(cls)}
    unknown = (skip | set(overrides or {})) - known
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    options = [_option(f, (overrides or {}).get(f.name, {}))
               for f in setting_fields(cls) if f.spec.cli and f.name not in skip]

    def decorate(func: F) -> F:
        taken = {p.name for p in getattr(func, "__click_params__", [])}  # the options below
        clash = taken & (known - skip)
        if clash:  # one value would be passed for two options
            raise TypeError(f"{func.__name__} already has options {sorted(clash)}")
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _option(f: SettingField, override: Mapping[str, Any]) -> Callable[[F], F]:
    spec = f.spec
    flag = spec.flag or "--" + f.name.replace("_", "-")
    kwargs: dict[str, Any] = {"help": spec.help}
    if spec.metavar is not None:
        kwargs["metavar"] = spec.metavar
    if f.kind is bool and f.choices is None:
        if f.default is True and "/" not in flag:
            flag = f"{flag}/--no-{flag[2:]}"
        kwargs["is_flag"] = True
        kwargs["default"] = bool(f.default)
    else:
        kwargs["type"] = _click_type(f)
        if not f.has_default:
            kwargs["required"] = True
        elif f.default is not None and isinstance(f.default, _SCALARS):
            kwargs["default"] = f.default
            kwargs["show_default"] = True
        if spec.positive:
            kwargs["callback"] = _positive
    kwargs.update(override)
    return click.option(flag, f.name, **kwargs)


def _click_type(f: SettingField) -> Any:
    spec = f.spec
    if f.choices is not None:
        if not all(isinstance(c, str) for c in f.choices):
            raise TypeError(f"{f.name}: choices on the command line must be text")
        return click.Choice(list(f.choices))
    if f.kind in (int, float) and not spec.positive and (
            spec.min is not None or spec.max is not None):
        if f.kind is int:
            return click.IntRange(min=None if spec.min is None else int(spec.min),
                                  max=None if spec.max is None else int(spec.max))
        return click.FloatRange(min=spec.min, max=spec.max)
    if f.kind in _SCALARS:
        return f.kind
    return str  # parsed by a callback given in ``overrides``


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be positive, got {value}")
    return value


def config_from(cls: type[T], params: Mapping[str, Any], **values: Any) -> T:
    """A ``cls`` made from the values of the options :func:`options_from` added (other
    ``params`` are left out, as are values of None: the field's default holds) and ``values``,
    which take precedence. Settings that contradict each other are a usage error (exit code 2),
    in one line."""
    names = {f.name for f in setting_fields(cls)}
    kwargs = {k: v for k, v in params.items() if k in names and v is not None}
    kwargs.update(values)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise click.UsageError(str(err)) from err
