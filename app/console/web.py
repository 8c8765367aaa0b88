"""What every console page shares: who is viewing, how a page is rendered, how a form is
trusted.

A viewer is the signed-in user of the login session the consent screen uses (`app.oauth2.
browser`): a password sign-in, so the user's own credentials (rule 11). Pages act through the
same services as the management API, with a `Principal` made from the viewer; they hold no rule
of their own. Every form is a POST carrying the session's CSRF token, sent from a page of this
site (`posted_from_here`), and answered with a redirect (post/redirect/get), except where the
answer shows a secret once.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from markupsafe import Markup
from sqlalchemy import Uuid, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth.principal import Principal
from app.console import i18n
from app.db import rows
from app.errors import Forbidden, InvalidRequest
from app.oauth2 import browser
from app.plans.models import Plan
from app.users.models import User

PREFIX = "/console"
HOME = f"{PREFIX}/me/api-access"

HEADERS = {
    **browser.PAGE_HEADERS,
    # The console's own stylesheet and script, nothing inline, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'",
}

class TranslatedLiterals(Extension):
    """Every `_("text")` of a literal, translated when the template is compiled: one
    environment per language (`envs`), each compiling the templates with its language's
    texts in place, which Jinja then writes out as the page's constant text. A page used to
    call `_` some sixty times as it rendered (each through Jinja's context: a fifth of a page's
    time, bench/NOTES.md). A `_` of anything else (a status, an error, a unit) is still called
    as the page renders; `gettext` and `ngettext` are untouched, and so is what `pybabel
    extract` reads."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        speech = i18n.Speech(self.environment.language)  # type: ignore[attr-defined]
        tokens = list(stream)  # one template's: a few thousand at most
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if (token.type == "name" and token.value == "_"
                    and (i == 0 or tokens[i - 1].type != "dot")  # not `x._(...)`
                    and [t.type for t in tokens[i + 1:i + 4]] == _CALL):
                yield Token(token.lineno, "string", speech.gettext(tokens[i + 2].value))
                i += 4
            else:
                yield token
                i += 1


# `_` then `( "text" )`: a parenthesis, a string literal, a parenthesis.
_CALL = ["lparen", "string", "rparen"]


# The furthest a paged table goes (`?offset=`): no link leads past it.
OFFSET_MAX = 100_000

# What a token may be, as pages name it (`TokenOut.status`).
STATUSES = ("active", "expired", "revoked", "rotated", "integration_refused")


def _environment(language: str) -> Environment:
    made = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                       autoescape=select_autoescape(default=True), trim_blocks=True,
                       lstrip_blocks=True, extensions=[TranslatedLiterals],
                       # The templates are part of the code: read once, not checked on disk
                       # for changes before every page (a stat per template per request).
                       auto_reload=False)
    made.language = language  # type: ignore[attr-defined]
    # A token's status in words, said once per language, not per row.
    said = i18n.Speech(language).gettext
    made.globals["status_names"] = {s: said(s.replace("_", " ")) for s in STATUSES}
    return made


envs = {language: _environment(language) for language in i18n.LANGUAGES}


class SignInRequired(Exception):
    """No (valid) login session: the viewer is sent to the sign-in page, then back."""

    def __init__(self, back: str, to: str = f"{PREFIX}/login") -> None:
        super().__init__(back)
        self.back, self.to = back, to


class FormRefused(Exception):
    """A form without this session's CSRF token, or posted from another site."""


@dataclass(frozen=True, slots=True)
class ViewerUser:
    id: uuid.UUID
    plan_id: uuid.UUID
    email: str
    name: str
    role: str
    locale: str | None


@dataclass(frozen=True, slots=True)
class ViewerPlan:
    id: uuid.UUID
    name: str


# The signed-in user and their plan's name, in one read.
# Built once: on a page that only reads, `rows` runs it straight on the driver (`app.db`).
_VIEWER = select(User.id, User.plan_id, User.email, User.name, User.role, User.locale,
                 Plan.name).join(Plan, Plan.id == User.plan_id) \
    .where(User.id == bindparam("user_id", type_=Uuid))


@dataclass(frozen=True, slots=True)
class Viewer:
    user: ViewerUser
    plan: ViewerPlan

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"

    @property
    def principal(self) -> Principal:
        """The viewer as the services know callers: a password sign-in, so every permission
        of the user's role and the user's own credentials (rule 11)."""
        return Principal(kind="user", plan_id=self.user.plan_id, user_id=self.user.id,
                         role=self.user.role, credential="password")


def safe_back(target: str | None) -> str:
    """Where to go after signing in: a console page of this site, nothing else (no open
    redirect: not `//host`, not `/\\host`, not another path)."""
    if not target or not target.startswith(PREFIX + "/") or "\\" in target \
            or not target.isascii() or any(c < " " or c == "\x7f" for c in target):
        return HOME
    path = unquote(target.split("?", 1)[0])
    if any(segment in (".", "..") for segment in path.split("/")) or "//" in path:
        return HOME
    return target


async def viewer(request: Request, session: AsyncSession) -> Viewer:
    """The signed-in user and their plan, or `SignInRequired`."""
    settings = request.app.state.settings
    login = browser.login_session(request, settings)
    if login is None:
        raise SignInRequired(_back(request))
    # Kept beside the token cache's users' facts, on the same terms (`app.tokens.cache`): no
    # call changes a user's email, name or role or a plan's name, none removes a user.
    cache = request.app.state.token_cache
    seen = cache.get_viewer(login.user_id)
    if seen is not None:
        return seen
    generation = cache.users_generation
    found = await rows(session, _VIEWER, {"user_id": login.user_id})
    if not found:
        raise SignInRequired(_back(request))
    user_id, plan_id, email, name, role, locale, plan_name = found[0]
    seen = Viewer(ViewerUser(user_id, plan_id, email, name, role, locale),
                  ViewerPlan(plan_id, plan_name))
    cache.put_viewer(user_id, seen, generation)
    return seen


def _back(request: Request) -> str:
    """This page, as a link back to it (after signing in, after a form)."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def admin(request: Request, session: AsyncSession) -> Viewer:
    """A system admin of the viewer's plan; members see the refusal page."""
    seen = await viewer(request, session)
    if not seen.is_admin:
        raise Forbidden("only a system admin of this plan may open this page",
                        code="admin_required")
    return seen


async def form(request: Request, max_fields: int = 40) -> dict[str, str]:
    """A posted form of a page of the console, once its CSRF token (the login session's, or
    before sign-in the double-submit one) and origin are checked."""
    raw = await request.form(max_files=0, max_fields=max_fields)
    fields = {k: v for k, v in raw.items() if isinstance(v, str)}
    settings = request.app.state.settings
    if not (browser.posted_from_here(request, settings)
            and browser.csrf_ok(request, settings, fields.get("csrf_token"))):
        raise FormRefused
    return fields


def speech_of(request: Request, seen: Viewer | None) -> i18n.Speech:
    """How the page speaks to its viewer (language and time zone)."""
    return i18n.speech(request, seen.user.locale if seen is not None else None)


class Fragment(bytes):
    """A part of a page drawn apart (`fragment`), as UTF-8. `render` puts it into its page as
    it is: a page's rows are most of its bytes, and a page's text holding them was copied by
    the template and then encoded whole, per request (a sixth of the console's Tokens page,
    bench/NOTES.md, nineteenth pass)."""

    __slots__ = ()


# Where a fragment goes in a page's text, until its bytes are put there. What a page shows of
# anyone's data is escaped, so no `<!--` of theirs reaches the text; the per-process nonce is
# a second lock.
_SLOT = f"<!--tessera-fragment-{secrets.token_hex(8)}-"
_SLOTS = re.compile(re.escape(_SLOT) + r"(\w+)-->")


def fragment(name: str, context: dict[str, Any], speech: i18n.Speech) -> Fragment:
    """A part of a page (a table's rows) rendered on its own, from `context` and `speech`
    alone: what it shows depends on nothing else, so that it can be kept
    (`cache.read_listing`) and put into its page (`render`) for any viewer speaking alike."""
    return Fragment(envs[speech.language].get_template(name).render(
        **context, speech=speech, _=speech.gettext, gettext=speech.gettext,
        ngettext=speech.ngettext).encode())


def _pieces(html: str) -> tuple[bytes | str, ...]:
    """The page's text encoded, in pieces around its fragments' slots: bytes, then the name of
    the fragment that goes next (a `str`), and so on."""
    return tuple(piece if i % 2 else piece.encode()
                 for i, piece in enumerate(_SLOTS.split(html)))  # text, name, ..., text


def _joined(pieces: tuple[bytes | str, ...], parts: Mapping[str, Fragment]) -> bytes:
    return b"".join(parts[piece] if isinstance(piece, str) else piece for piece in pieces)


def render(request: Request, name: str, context: dict[str, Any], *, status: int = 200,
           seen: Viewer | None = None, headers: dict[str, str] | None = None,
           csrf: str | None = None) -> Response:
    """A page; `csrf` is its forms' token when not the login session's (the operator's)."""
    settings = request.app.state.settings
    own = csrf is not None
    csrf = csrf or browser.csrf_token(request, settings)
    pieces = _drawn(request, name, context, seen, speech_of(request, seen), csrf)
    response = HTMLResponse(_joined(pieces, context), status_code=status,
                            headers={**HEADERS, **(headers or {})})
    if not own and browser.login_session(request, settings) is None:  # before login
        browser.set_csrf(response, settings, csrf)  # a double-submit token
    return response


def _drawn(request: Request, name: str, context: dict[str, Any], seen: Viewer | None,
           speech: i18n.Speech, csrf: str) -> tuple[bytes | str, ...]:
    """The page as `_pieces`: its fragments left out, in their slots' place."""
    parts = {key: value for key, value in context.items() if isinstance(value, Fragment)}
    if parts:
        context = {**context, **{key: Markup(f"{_SLOT}{key}-->")  # noqa: S704 - our own
                                 for key in parts}}
    html = envs[speech.language].get_template(name).render(
        **context, request=request, csrf=csrf, viewer=seen, speech=speech,
        _=speech.gettext, gettext=speech.gettext, ngettext=speech.ngettext,
        lang=speech.language, languages=i18n.LANGUAGES, path=request.url.path,
        here=_back(request))
    return _pieces(html) if parts else (html.encode(),)


# What a page's context may hold that is a value, compared as such in a kept page's key; any
# other object is compared by identity (`render_kept`).
_VALUES = (str, int, float, uuid.UUID, datetime, type(None))


def render_kept(request: Request, name: str, context: dict[str, Any], *, seen: Viewer,
                now: datetime, drawn_from: tuple[Any, ...] | None = None,
                until: datetime | None = None) -> Response:
    """`render` for a signed-in viewer's page that only reads, its bytes kept beside the plan's
    listings (`cache.get_listing`: the same room, dropped with the plan's listings, while the
    cache serves, for `cache.LISTING_SECONDS` at most), and answered again while it would be
    drawn alike: the same template, viewer, session (its CSRF token), language, time zone and
    URL, the same values in its context, and the very objects for the rest (the rows kept as
    answered, the plan's people kept beside the cache), which are handed out anew once
    anything they show changed. `drawn_from`: the objects the context's other entries were
    made from, compared instead of them (the rows kept, of which views were made as of
    `now`); `until`: the first instant at which they would be made otherwise. The console's
    Tokens page drew its frame (menus, filters, the language form) in about a third of its
    time (bench/NOTES.md, nineteenth pass)."""
    cache = request.app.state.token_cache
    speech = speech_of(request, seen)
    csrf = browser.csrf_token(request, request.app.state.settings)
    given = {key: value for key, value in context.items() if isinstance(value, _VALUES)}
    refs = drawn_from if drawn_from is not None else \
        tuple(value for key, value in context.items() if key not in given)
    key = ("drawn", name, seen, speech.language, speech.zone_name, csrf,
           request.scope["path"], request.scope["query_string"], *given.items(),
           *map(id, refs))
    kept = cache.get_listing(key, now)
    if kept is not None and len(kept[0]) == len(refs) \
            and all(was is ref for was, ref in zip(kept[0], refs, strict=True)):
        pieces = kept[1]
    else:
        generation = cache.listings_generation
        pieces = _drawn(request, name, context, seen, speech, csrf)
        # Its bytes, the fragments it holds (kept, and weighed, as listings too, but held
        # here after those listings were read anew), and its key's text.
        weight = 256 + sum(map(len, pieces)) + len(csrf) + len(key[6]) + len(key[7]) \
            + sum(len(ref) for ref in refs if isinstance(ref, Fragment)) \
            + sum(len(value) for value in given.values() if isinstance(value, str))
        cache.put_listing(key, seen.plan.id, (refs, pieces), now, until, generation,
                          weight=weight)
    return HTMLResponse(_joined(pieces, context), headers=HEADERS)


def redirect(to: str, **query: str | None) -> RedirectResponse:
    """Post/redirect/get: 303, so a reload does not post the form again."""
    shown = {k: v for k, v in query.items() if v is not None}
    return RedirectResponse(to + (f"?{urlencode(shown)}" if shown else ""), status_code=303,
                            headers=HEADERS)


def to_sign_in(back: str, to: str = f"{PREFIX}/login") -> RedirectResponse:
    return RedirectResponse(f"{to}?next={quote(safe_back(back), safe='/')}",
                            status_code=303, headers=HEADERS)


def error_page(request: Request, status: int, message: str) -> Response:
    """A console page's refusal or error, as a page (the API's JSON elsewhere)."""
    titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed",
              422: "Check what you entered", 503: "Unavailable"}
    return render(request, "error.html", {"title": titles.get(status, "Something went wrong"),
                                          "message": message}, status=status)


# What a page says when the request failed where no handler answered (the API answers the same
# failures in its JSON shape), by their cause (`app.api.errors._cause_of`).
def N_(message: str) -> str:  # noqa: N802 - gettext's name for "translated later"
    return message


FAILURES = {
    "outage": N_("Tessera cannot reach its database just now. Nothing was changed; try again in "
                 "a moment."),
    "aborted": N_("Another change came at the same moment, so nothing was done. Try again."),
    "conflict": N_("Something changed meanwhile, so nothing was done. Reload the page and try "
                   "again."),
    "disconnect": N_("The request ended before it was read whole. Try again."),
    "data": N_("A value you entered cannot be stored. Check what you entered and try again."),
    "error": N_("Something went wrong on our side. Try again; if it goes on, tell the people "
                "who run Tessera."),
}


def failure_page(request: Request, status: int, cause: str,
                 headers: Mapping[str, str]) -> Response:
    """The page for a console request that failed where no handler caught it (a database that
    cannot be reached, say): the status and `Retry-After` the API's answer would have, and
    words for its `cause`. Reads nothing from the database."""
    page = error_page(request, status, FAILURES.get(cause, FAILURES["error"]))
    if "retry-after" in headers:
        page.headers["Retry-After"] = headers["retry-after"]
    return page


def whole_number(request: Request, name: str, most: int) -> int:
    """A query parameter a page takes as a whole number (`?offset=`), 0 when absent, clamped
    to 0..`most`; other text is refused (422)."""
    try:
        value = int(request.query_params.get(name) or 0)
    except ValueError:
        raise InvalidRequest("enter whole numbers") from None
    return max(0, min(value, most))


def parse_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None
