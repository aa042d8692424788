"""Settings files: one JSON or TOML table whose keys are a settings object's field names.

The gateway (``MDEPLOY_SETTINGS_FILE``) and the inference server (``--settings-file``,
``MDEPLOY_SERVER_SETTINGS_FILE``) read them the same way, below flags and the environment.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any


def read_settings_file(path: Path) -> dict[str, Any]:
    """Settings from a .json or .toml file; ValueError (or OSError) says what is wrong with it."""
    text = path.read_text()
    try:
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: {error}") from None
    except RecursionError:
        raise ValueError(f"{path}: nests too deeply; settings are one table of values") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table/object of settings")
    return data
