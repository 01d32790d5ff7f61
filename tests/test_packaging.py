"""What an installation from a wheel holds: every package of the tree, under ``wsiseg``."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_of_the_tree_is_installed():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    folders = {"wsiseg": ROOT / "wsiseg", "wsiseg.cli": ROOT / "cli",
               "wsiseg.models": ROOT / "models"}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            parts = init.parent.relative_to(folder).parts
            found.add(".".join((name, *parts)))
    # A package left out is missing from every installation but an editable one.
    assert found == listed
