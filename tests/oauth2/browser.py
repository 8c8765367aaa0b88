"""A minimal browser for the HTML flow: keeps cookies, reads forms, submits them as shown."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx2


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))


def form_of(html: str) -> dict:
    parser = _Forms()
    parser.feed(html)
    assert parser.forms, "no form on the page"
    return parser.forms[0]


class Browser:
    def __init__(self, app, base_url: str = "https://tessera.test") -> None:  # noqa: ANN001
        self.http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                       base_url=base_url, follow_redirects=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def submit(self, page: httpx2.Response, button: tuple[str, str] | None = None,
                     **typed: str) -> httpx2.Response:
        form = form_of(page.text)
        data = {**form["fields"], **typed}
        if button:
            assert button in form["buttons"], f"{button} not offered: {form['buttons']}"
            data[button[0]] = button[1]
        return await self.http.post(form["action"], data=data)

    async def follow(self, response: httpx2.Response) -> httpx2.Response:
        assert response.status_code == 303, (response.status_code, response.text[:300])
        return await self.http.get(response.headers["location"])

    async def authorize(self, url: str, email: str, password: str,
                        decision: str = "allow") -> httpx2.Response:
        """Log in and answer the consent screen; returns the redirect back to the client."""
        page = await self.http.get(url)
        if 'name="password"' in page.text:
            assert page.status_code == 200, page.text[:300]
            page = await self.follow(await self.submit(page, email=email, password=password))
        if page.status_code == 303:  # an error sent straight back to the client
            return page
        assert page.status_code == 200, page.text[:500]
        return await self.submit(page, button=("decision", decision))


def redirect_params(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 303, (response.status_code, response.text[:300])
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {k: v[0] for k, v in query.items()}
