"""Collect labelled images from an image-search API into ``DIR/raw/<class>/`` with their provenance.

Search APIs are providers in a registry (``@register_provider("name", ...)``); the built-in ones are
``openverse`` and ``wikimedia`` (keyless, and both say under which licence each image may be used) and
``bing`` (for the Bing Image Search v7 compatible endpoints that remain since the public API was retired).

Everything a search or an image host sends is untrusted input, checked once where it enters: search results
must be well-formed, an image URL never chooses its file name, a body larger than ``max_bytes`` is abandoned
mid-stream, each request has one deadline for all its tries and reads (a host dripping bytes cannot hold it),
and a file is kept only if PIL decodes it completely. A bad image is skipped with a short reason, never a crash.
The API key travels only in the search request's header; it is never put in a URL, a reason, an error or the
manifest, and image downloads (to arbitrary hosts) never carry it.

Layout: ``_http`` (the client: retries, backoff, deadlines, redirects, size limits, redaction), ``_registry``
(providers by name and what each needs), ``_providers`` (the built-in ones), ``_fetch`` (one image from URL to disk) and
``_run`` (queries, per-class targets, manifest rows).
"""

from __future__ import annotations

from tuning.data.collect._registry import Candidate, Provider, get_provider, known_providers, register_provider
from tuning.data.collect._run import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    CollectProgress,
    CollectResult,
    Query,
    collect,
    parse_query,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "Candidate",
    "CollectProgress",
    "CollectResult",
    "Provider",
    "Query",
    "collect",
    "get_provider",
    "known_providers",
    "parse_query",
    "register_provider",
]
