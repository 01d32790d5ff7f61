"""Every field of ResultInfo says what it is to a rerun that finds the result in its place."""

from __future__ import annotations

import dataclasses
from typing import get_args

from wsiseg.result.info import FIELD_ROLES, FieldRole, ResultInfo


def test_every_field_of_a_result_is_classified_for_a_rerun():
    # A field added or renamed fails here until it is classified: does a rerun that finds a
    # result keep it only for the same slide, only for the same settings, or is it produced?
    names = {f.name for f in dataclasses.fields(ResultInfo)}
    assert set(FIELD_ROLES) == names, (
        f"not classified: {sorted(names - set(FIELD_ROLES))}; "
        f"no longer fields: {sorted(set(FIELD_ROLES) - names)}")
    assert set(FIELD_ROLES.values()) <= set(get_args(FieldRole))


def test_the_settings_a_result_records_are_those_a_rerun_compares():
    from wsiseg.inference.config import MAP_SETTINGS

    # What a rerun compares is the recorded config; each of the result's own fields that is
    # a setting records one of the settings that change the map.
    settings = {name for name, role in FIELD_ROLES.items() if role == "settings"}
    assert "config" in settings and FIELD_ROLES["slide"] == "slide"
    assert settings - {"config", "classes"} <= set(MAP_SETTINGS)
