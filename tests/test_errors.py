"""Every error wsiseg raises lives in wsiseg.errors, derives from WsisegError and is exported."""

from __future__ import annotations

import inspect

import pytest

import wsiseg
from wsiseg import errors

ERRORS = [c for _, c in inspect.getmembers(errors, inspect.isclass)
          if issubclass(c, Exception) and c.__module__ == errors.__name__]


def test_the_errors_module_holds_the_errors_it_should():
    names = {c.__name__ for c in ERRORS}
    assert {"WsisegError", "SlideError", "ResolutionError", "ModelError", "OutputError",
            "ConfigError", "ResultError", "DatasetError", "MetricsError"} <= names


@pytest.mark.parametrize("error", ERRORS, ids=lambda c: c.__name__)
def test_every_error_is_exported_and_derives_from_the_root(error):
    assert getattr(wsiseg, error.__name__) is error
    assert error.__name__ in wsiseg.__all__
    assert issubclass(error, wsiseg.WsisegError)


@pytest.mark.parametrize("error", [c for c in ERRORS if c is not errors.WsisegError],
                         ids=lambda c: c.__name__)
def test_specific_errors_also_refine_a_builtin(error):
    # Callers may catch the builtin (ValueError, OSError) without knowing wsiseg.
    assert any(issubclass(error, b) for b in (ValueError, OSError))


def test_old_import_paths_give_the_same_classes():
    from wsiseg.training.datasets import DatasetError
    from wsiseg.training.metrics import MetricsError

    assert DatasetError is errors.DatasetError and MetricsError is errors.MetricsError
    assert issubclass(DatasetError, ValueError) and issubclass(MetricsError, ValueError)
