"""The built-in search providers: each turns a query into pages of candidates, validating the response as it enters.

The study gathered about 1,000 images per class through the Bing Image Search API. That service was retired
in August 2025, so three request formats are spoken here: ``bing`` (for the compatible endpoints that remain),
``openverse`` and ``wikimedia`` (both keyless, and both say under which licence each image may be used).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

from tuning.data.collect._http import Http, RequestFailed
from tuning.data.collect._registry import Candidate, register_provider

#: A search that keeps returning pages is still stopped; 200 pages is far beyond any class's needs.
MAX_PAGES = 200

_RASTER_MIMES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"}
_BING_FORMATS = {"", "jpeg", "jpg", "png", "gif", "animatedgif", "webp", "bmp", "tiff"}


def _text(value: Any, *, limit: int = 200) -> str:
    """A plain one-line string from an API field: HTML tags stripped, entities decoded, whitespace collapsed."""
    if not isinstance(value, str):
        return ""
    value = html.unescape(re.sub(r"<[^>]*>", " ", value))
    return " ".join(value.split())[:limit]


def _url(value: Any) -> str:
    """A URL field as sent (no HTML unescaping: ``&copy=`` in a query string is not an entity)."""
    return value.strip()[:2000] if isinstance(value, str) else ""


def _meta(meta: dict[str, Any], name: str) -> str:
    entry = meta.get(name)
    return _text(entry.get("value")) if isinstance(entry, dict) else ""


@register_provider("bing", page_size=50, key_env="BING_SEARCH_KEY",
                   no_endpoint="Microsoft retired the public Bing Image Search API in August 2025; give a "
                               "compatible endpoint, or use --provider openverse or wikimedia")
def _bing(http: Http, base: str, text: str, size: int, key: str | None) -> Iterator[list[Candidate]]:
    """Bing v7 names no licence or author per image; the page that published it is the attribution we have."""
    url = f"{base}/v7.0/images/search"
    offset = 0
    for _ in range(MAX_PAGES):
        data = http.get_json(url, params={"q": text, "count": size, "offset": offset},
                             headers={"Ocp-Apim-Subscription-Key": key or ""})
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, list):
            raise RequestFailed("bad response: no 'value' list")
        page = []
        for item in value:
            if not isinstance(item, dict):
                continue
            fmt = _text(item.get("encodingFormat")).lower()
            page.append(Candidate(_url(item.get("contentUrl")), "unknown",
                                  _url(item.get("hostPageUrl")),
                                  "" if fmt in _BING_FORMATS else fmt))
        yield page
        nxt = data.get("nextOffset")
        total = data.get("totalEstimatedMatches")
        nxt = nxt if isinstance(nxt, int) and nxt > offset else offset + len(value)
        if not value or (isinstance(total, int) and nxt >= total):
            return
        offset = nxt


def _openverse_license(code: str, version: str) -> str:
    code = code.lower()
    name = {"cc0": "CC0", "pdm": "Public Domain Mark"}.get(code, f"CC {code.upper()}" if code else "")
    return f"{name} {version}".strip()


@register_provider("openverse", page_size=20, endpoint="https://api.openverse.org")
def _openverse(http: Http, base: str, text: str, size: int, key: str | None) -> Iterator[list[Candidate]]:
    url = f"{base}/v1/images/"
    for number in range(1, MAX_PAGES + 1):
        data = http.get_json(url, params={"q": text, "page": number, "page_size": size})
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise RequestFailed("bad response: no 'results' list")
        yield [Candidate(_url(r.get("url")),
                         _openverse_license(_text(r.get("license")), _text(r.get("license_version"))),
                         _text(r.get("creator")))
               for r in results if isinstance(r, dict)]
        count = data.get("page_count")
        if not results or (isinstance(count, int) and number >= count):
            return


@register_provider("wikimedia", page_size=50, endpoint="https://commons.wikimedia.org")
def _wikimedia(http: Http, base: str, text: str, size: int, key: str | None) -> Iterator[list[Candidate]]:
    """Commons search over File: pages; a 1,024 px thumbnail is fetched when offered (originals run to 100 MB)."""
    url = f"{base}/w/api.php"
    params: dict[str, Any] = {
        "action": "query", "generator": "search", "gsrnamespace": 6, "gsrsearch": text, "gsrlimit": size,
        "gsroffset": 0, "prop": "imageinfo", "iiprop": "url|extmetadata|mime", "iiurlwidth": 1024, "format": "json",
    }
    for _ in range(MAX_PAGES):
        data = http.get_json(url, params=params)
        if not isinstance(data, dict):
            raise RequestFailed("bad response: not an object")
        if isinstance(data.get("error"), dict):
            raise RequestFailed(f"API error: {_text(data['error'].get('code'), limit=60)}")
        pages = (data.get("query") or {}).get("pages") or {}
        pages = list(pages.values()) if isinstance(pages, dict) else pages
        items = sorted((p for p in pages if isinstance(p, dict)), key=lambda p: p.get("index", 0)
                       if isinstance(p.get("index"), int) else 0)
        page = []
        for item in items:
            infos = item.get("imageinfo")
            info = infos[0] if isinstance(infos, list) and infos and isinstance(infos[0], dict) else {}
            extmeta = info.get("extmetadata")
            meta: dict[str, Any] = extmeta if isinstance(extmeta, dict) else {}
            mime = _text(info.get("mime")).lower()
            page.append(Candidate(_url(info.get("thumburl") or info.get("url")),
                                  _meta(meta, "LicenseShortName"), _meta(meta, "Artist"),
                                  "" if not mime or mime in _RASTER_MIMES else mime))
        yield page
        cont = data.get("continue")
        if not isinstance(cont, dict) or "gsroffset" not in cont:
            return
        params = {**params, **{k: v for k, v in cont.items() if isinstance(v, str | int)}}
