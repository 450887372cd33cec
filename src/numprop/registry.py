"""Registries: the one place where a name ("adam", "relu", "Linear") becomes an object.

Each kind of thing (layers, activations, losses, optimizers, schedules,
preprocessing) has one ``Registry``, defined beside the classes it holds.
The core takes objects; only the edges (the command line, configurations,
saved files) look names up here.

    OPTIMIZERS = Registry("optimizer")
    OPTIMIZERS.add("sgd", SGD)
    opt = OPTIMIZERS.create("sgd", params, lr=0.1)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from numprop.errors import ConfigError


class Registry:
    """Names of one kind of thing, each mapped to a factory (usually a class).

    Parameters
    ----------
    kind : str
        What the entries are, for error messages ("optimizer", "layer").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def add(self, name: str, factory: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``factory`` under ``name``; returns the factory.

        Registering the same factory again under its name is harmless; another
        factory under a taken name is an error.

        Parameters
        ----------
        name : str
            Non-empty.
        factory : callable
            Usually a class.

        Returns
        -------
        callable
            ``factory``, unchanged (so ``add`` can end a decorator).

        Raises
        ------
        ConfigError
            If ``name`` is not a non-empty string, or is taken by another factory.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if self._entries.get(name, factory) is not factory:
            raise ConfigError(
                f"the {self.kind} name {name!r} is taken by {self._entries[name].__qualname__}"
            )
        self._entries[name] = factory
        return factory

    def register(self, name: str | None = None) -> Callable[[Callable], Callable]:
        """Decorator form of ``add``; the name defaults to the class's own name.

        Parameters
        ----------
        name : str, optional
            The registered name; ``factory.__name__`` by default.

        Returns
        -------
        callable
            A decorator that registers its argument and returns it unchanged.
        """

        def decorate(factory):
            return self.add(name or factory.__name__, factory)

        return decorate

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name``; a ConfigError names the choices.

        Raises
        ------
        ConfigError
            If ``name`` is not registered; the message lists the registered names.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            ) from None

    def create(self, name: str, *args, **kwargs) -> Any:
        """``get(name)(*args, **kwargs)``; wrong keywords are a ConfigError, not a TypeError.

        Parameters
        ----------
        name : str
            A registered name.
        *args, **kwargs
            Passed to the factory.

        Returns
        -------
        object
            What the factory returns.

        Raises
        ------
        ConfigError
            For an unknown name, or arguments the factory's signature does not accept.
        """
        factory = self.get(name)
        try:
            inspect.signature(factory).bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"bad settings for {self.kind} {name!r}: {exc}") from None
        return factory(*args, **kwargs)

    def create_from(self, name: str, *args, settings: dict[str, Any]) -> Any:
        """Like ``create``, passing only those ``settings`` the factory accepts.

        For configurations that hold options of several choices at once (a
        momentum that only SGD takes, a warm-up that only the cosine schedule
        takes): each choice picks the keywords it has.

        Parameters
        ----------
        name : str
            A registered name.
        *args
            Passed to the factory.
        settings : dict of str to object
            Candidate keyword arguments; those the factory does not name are dropped.

        Returns
        -------
        object
            What the factory returns.

        Raises
        ------
        ConfigError
            For an unknown name, or arguments that still do not bind (e.g. a
            missing required one).
        """
        accepted = inspect.signature(self.get(name)).parameters
        return self.create(name, *args, **{k: v for k, v in settings.items() if k in accepted})

    def name_of(self, factory: Callable[..., Any]) -> str | None:
        """The name ``factory`` is registered under, or None."""
        return next((n for n, f in self._entries.items() if f is factory), None)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
