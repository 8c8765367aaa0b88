"""The console's templates compiled with their texts translated in place
(`app.console.web.TranslatedLiterals`) make the same pages, in each language, as templates
that call `_` for every text as they render."""

from __future__ import annotations

import re

import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.console import i18n, web
from tests.console.conftest import sign_in
from tests.console.test_pages import _operator_sign_in
from tests.helpers import create_gateway_client

PAGES = ["/console/me/api-access", "/console/me/connected-apps",
         "/console/admin/security/api-tokens",
         "/console/admin/security/api-tokens?value=30&unit=days",
         "/console/admin/security/api-tokens?value=-3&unit=eons",
         "/console/admin/tokens", "/console/admin/tokens?kind=personal",
         "/console/admin/integrations", "/console/admin/directory",
         "/console/admin/audit", "/console/nothing-here"]


def _calling(language: str) -> Environment:
    """The templates as they were: every `_` called as the page renders."""
    made = Environment(loader=FileSystemLoader(web.envs[language].loader.searchpath),
                       autoescape=select_autoescape(default=True), trim_blocks=True,
                       lstrip_blocks=True, auto_reload=False)
    made.language = language  # type: ignore[attr-defined]
    made.globals.update(web.envs[language].globals)  # the same names the pages may use
    return made


# A call of `_` with a string literal, as Jinja compiles it when nothing translated it.
_LITERAL_CALL = re.compile(r"context\.call\(\(undefined\(name='_'\)[^)]*\), '")


def test_no_literal_text_is_left_to_translate_as_the_page_renders() -> None:
    for language, env in web.envs.items():
        for name in env.list_templates(extensions=["html"]):
            source = env.loader.get_source(env, name)[0]
            assert not _LITERAL_CALL.search(env.compile(source, name=name, raw=True)), name
            plain = _calling(language)
            if '_("' in source or "_('" in source:  # the same template, untranslated, has some
                assert _LITERAL_CALL.search(plain.compile(source, name=name, raw=True)), name
    french = web.envs["fr"].compile(web.envs["fr"].loader.get_source(
        web.envs["fr"], "base.html")[0], raw=True)
    assert i18n.Speech("fr").gettext("Skip to content") in french
    assert "Skip to content" not in french


@pytest.mark.asyncio
async def test_pages_are_the_same_with_texts_translated_when_compiled(
        client, plan, operator, monkeypatch) -> None:
    await create_gateway_client(client, plan)
    await sign_in(client, plan.admin)
    pages = []
    for language in i18n.LANGUAGES:
        client.cookies.set(i18n.LANG_COOKIE, language)
        for path in PAGES:
            pages.append((language, path))
    operator_client_pages = [(language, path) for language in i18n.LANGUAGES
                             for path in ("/console/operator", "/console/operator/requests")]

    async def fetch() -> list[tuple[int, str]]:
        seen = []
        for language, path in pages:
            client.cookies.set(i18n.LANG_COOKIE, language)
            r = await client.get(path)
            seen.append((r.status_code, r.text))
        return seen

    translated = await fetch()
    assert {status for status, _ in translated} >= {200, 404, 422}
    assert any(i18n.Speech("fr").gettext("Skip to content") in text for _, text in translated)
    monkeypatch.setattr(web, "envs", {lang: _calling(lang) for lang in i18n.LANGUAGES})
    called = await fetch()
    for (language, path), one, other in zip(pages, translated, called, strict=True):
        assert one == other, (language, path)
    # The operator's pages, and the sign-in page before any session (its form's token is the
    # double-submit cookie's, set here so that both answers carry the same).
    monkeypatch.undo()
    for language, path in operator_client_pages + [("en", "/console/login"),
                                                   ("fr", "/console/login")]:
        client.cookies.clear()
        if path.startswith("/console/operator"):
            await _operator_sign_in(client, operator)
        else:
            client.cookies.set(web.browser.CSRF_COOKIE, "the-same-token")
        client.cookies.set(i18n.LANG_COOKIE, language)
        one = await client.get(path)
        with monkeypatch.context() as m:
            m.setattr(web, "envs", {lang: _calling(lang) for lang in i18n.LANGUAGES})
            other = await client.get(path)
        assert one.status_code == 200, (language, path)
        assert (one.status_code, one.text) == (other.status_code, other.text), (language, path)
