"""The measured data the notebooks and tests read (benchmark results committed as JSON).

One loader, so notebooks, views and tests find the files the same way wherever the package is
installed (a checkout, a wheel, or nbgrader's copy of a notebook in another folder).
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_json(name: str) -> Any:
    """Read ``lora_edu/data/<name>`` (e.g. ``"memory_measurements.json"``) and parse it."""
    folder = resources.files(__name__)
    path = folder.joinpath(name)
    if not path.is_file():
        available = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))
        raise FileNotFoundError(f"no data file {name!r} in lora_edu/data; the files are {available}")
    return json.loads(path.read_text(encoding="utf-8"))
