"""Search providers registered by name, each declaring what it needs (an endpoint, a key and where it lives).

A provider is one function that turns a query into pages of ``Candidate``s, validating the response as it
enters; ``@register_provider("name", ...)`` makes it available to ``collect`` and ``tuning data collect``.
What a provider needs is declared with it, so the CLI reads the right key variable and a missing endpoint or
key is one clear error before anything is requested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tuning._registry import Registry
from tuning.data.collect._http import Http


@dataclass(frozen=True)
class Candidate:
    """One search result: the image URL and what the provider says about it, before any download."""

    url: str
    license: str
    creator: str
    kind: str = ""  # the provider's declared type when it is not a raster image; checked before any download


#: ``search(http, base, text, page_size, key)`` yields pages of candidates until the results run out.
SearchFn = Callable[[Http, str, str, int, str | None], Iterator[list[Candidate]]]


@dataclass(frozen=True)
class Provider:
    """A registered search API and what it needs to be asked."""

    name: str
    search: SearchFn
    page_size: int  # results per request: the API's usual maximum for an anonymous or basic client
    endpoint: str | None = None  # the public API base URL; None: the user must give --endpoint
    key_env: str | None = None  # the environment variable holding its API key; None: keyless
    no_endpoint: str = ""  # why there is no default endpoint, said when --endpoint is missing


_PROVIDERS: Registry[Provider] = Registry("provider", ("tuning.data.collect._providers",))


def register_provider(name: str, *, page_size: int, endpoint: str | None = None, key_env: str | None = None,
                      no_endpoint: str = "") -> Callable[[SearchFn], SearchFn]:
    """Decorator: make ``search(http, base, text, page_size, key)`` available as ``--provider name``."""
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")

    def wrap(fn: SearchFn) -> SearchFn:
        _PROVIDERS.add(name, Provider(name, fn, page_size, endpoint, key_env, no_endpoint))
        return fn

    return wrap


def known_providers() -> list[str]:
    return _PROVIDERS.names()


def get_provider(name: str) -> Provider:
    """The registered provider, or an error listing the known names."""
    return _PROVIDERS.get(name)
