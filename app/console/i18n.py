"""The console's languages: English (the source text) and French.

The language is the viewer's choice (a cookie the language switcher sets, also kept on the
user's account for their mails and other browsers), else the best match of the browser's
`Accept-Language` (Babel's negotiation), else English. Translations are
gettext catalogues (`locales/<lang>.po`, extracted from the templates and the code with
`pybabel extract`), read once with Babel. Dates are shown in the viewer's time zone when the
browser told it (the `tz` cookie the console's script sets), in UTC otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, dates
from babel.messages.pofile import read_po
from starlette.requests import Request

LANGUAGES = ("en", "fr")
DEFAULT = "en"
LANG_COOKIE = "tessera_lang"
TZ_COOKIE = "tessera_tz"
_LOCALES = Path(__file__).parent / "locales"


@functools.cache
def _catalogue(language: str) -> dict[str, str]:
    path = _LOCALES / f"{language}.po"
    if language == DEFAULT or not path.exists():
        return {}
    with path.open("rb") as handle:
        catalogue = read_po(handle, locale=language)
    return {str(m.id): str(m.string) for m in catalogue
            if m.id and m.string and not m.fuzzy and isinstance(m.id, str)}


def _accepted(header: str) -> list[str]:
    """`Accept-Language`'s tags, best first (RFC 9110 §12.5.4); malformed weights count as 0."""
    tags = []
    for part in header.split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if tag and weight > 0:
            tags.append((weight, tag.strip()))
    return [tag.replace("-", "_") for _w, tag in sorted(tags, key=lambda t: -t[0])]


def negotiate(request: Request, preferred: str | None = None) -> str:
    """This browser's choice, else the account's (`preferred`), else `Accept-Language`."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    if preferred in LANGUAGES:
        return preferred
    found = Locale.negotiate(_accepted(request.headers.get("accept-language", "")),
                             list(LANGUAGES), sep="_")
    return str(found.language) if found is not None else DEFAULT


def zone(request: Request) -> tzinfo:
    name = unquote(request.cookies.get(TZ_COOKIE, ""))  # the script sets it URI-encoded
    if not name or len(name) > 64 or not name.isascii():
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder's name ("Europe")
        return UTC


@functools.cache
def _months(language: str) -> dict[int, str]:
    return dict(Locale.parse(language).months["format"]["abbreviated"])


@dataclass(frozen=True, slots=True)
class Speech:
    """How a page speaks to its viewer: language and time zone."""

    language: str = DEFAULT
    tz: tzinfo = UTC

    def gettext(self, message: str) -> str:
        return _catalogue(self.language).get(message, message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        # The catalogues hold the plural forms of English and French, which agree on
        # "one" for n in {0, 1} only in French; each form is a message of its own here.
        if self.language == "fr":
            return self.gettext(singular if n in (0, 1) else plural)
        return self.gettext(singular if n == 1 else plural)

    def when(self, at: datetime | None) -> str:
        """A date and time on a page, in the viewer's zone: "15 Jan 2026, 13:00" ("15 janv.
        2026, 13:00"). Month names come from Babel's locale data, read once per language; the
        rest is plain formatting (Babel's pattern formatter cost ~0.2 ms a date: a page of 100
        tokens spent most of its time there)."""
        if at is None:
            return ""
        try:
            local = at.astimezone(self.tz)
        except OverflowError:  # the first or last day a date can hold, moved out of range
            local = at.astimezone(UTC)
        return f"{local.day} {_months(self.language)[local.month]} {local.year}, " \
               f"{local.hour:02d}:{local.minute:02d}"

    def written(self, at: datetime) -> str:
        """A date and time for a mail: spelled out, 24-hour, in UTC (a mail has no browser
        to say its reader's zone), e.g. "24 February 2026, 12:00 UTC"."""
        return dates.format_datetime(at.astimezone(UTC), "d MMMM y, HH:mm",
                                     locale=self.language) + " UTC"

    @property
    def zone_name(self) -> str:
        return "UTC" if self.tz is UTC else str(self.tz)


def speech(request: Request, preferred: str | None = None) -> Speech:
    return Speech(negotiate(request, preferred), zone(request))
