"""Lazy name -> object registries filled from package entry points.

A third-party package adds an agent or an env family by declaring an entry point in the
``zoo.agents`` or ``zoo.envs`` group; nothing here imports the plugin until it is asked for.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from core.errors import UsageError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Entry points of one group, loaded on first use.

    :param group: entry-point group, e.g. ``zoo.agents``
    :param kind: what an entry is called in error messages, e.g. ``agent``
    """

    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind
        self._entry_points: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, T] = {}
        self._extra: dict[str, T] = {}

    def _points(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in entry_points(group=self.group)}
        return self._entry_points

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(set(self._points()) | set(self._extra))

    def register(self, name: str, obj: T) -> None:
        """Add an entry at run time (tests, notebooks); entry points are the normal route."""
        self._extra[name] = obj

    def get(self, name: str) -> T:
        """Load and return the entry called ``name``; unknown names raise :class:`UsageError`."""
        if name in self._extra:
            return self._extra[name]
        if name not in self._loaded:
            point = self._points().get(name)
            if point is None:
                known = ", ".join(self.names()) or "none installed"
                raise UsageError(
                    f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; known: {known}"
                )
            self._loaded[name] = point.load()
        return self._loaded[name]

    def items(self) -> list[tuple[str, T]]:
        """All entries, loaded."""
        return [(name, self.get(name)) for name in self.names()]
