"""Name -> class tables (methods, analyses): each name is registered once."""
from __future__ import annotations


def registrar(table: dict, kind: str):
    """A class decorator that adds `cls` to `table` under `cls.name`, refusing a second one."""

    def register(cls):
        if cls.name in table:
            raise ValueError(f"{kind} {cls.name!r} is registered twice")
        table[cls.name] = cls
        return cls

    return register
