"""The GraphiQL page and its assets come from Keyward itself: no CDN, no external font, a strict CSP, and
GraphQL over POST and GET is unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from conftest import OrgAdmin

from api.graphiql import CONTENT_SECURITY_POLICY, STATIC_DIR

VENDORED = STATIC_DIR / "graphiql"
# The only absolute URLs in the vendored JavaScript: the SVG namespace, licence banners and documentation
# links in comments and help text. None is fetched; a new one (a CDN loader after an update) fails here.
KNOWN_INERT_URLS = {
    "http://www.w3.org/2000/svg",  # XML namespaces (react-dom creates elements in them)
    "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/1998/Math/MathML",
    "http://www.w3.org/1999/xlink",
    "http://www.w3.org/XML/1998/namespace",
    "https://github.com/jonschlinkert",
    "https://github.com/jonschlinkert/isobject",
    "https://github.com/jonschlinkert/set-value",
    "https://github.com/jonschlinkert/is-primitive",
    "https://github.com/jonschlinkert/get-value",
    "https://github.com/graphql/graphiql",
    "https://github.com/graphql/graphiql/blob/master/examples/graphiql-cdn/index.html",
    "https://en.wikipedia.org/wiki/IEEE_floating_point",
    "https://commonmark.org/",
    "https://codemirror.net/5/doc/manual.html",
    "https://reactjs.org/docs/error-decoder.html",
}


async def page(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.get("/graphql", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 200
    return response


async def test_page_is_ours_with_a_strict_csp(client: httpx.AsyncClient) -> None:
    response = await page(client)
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval, no other origin
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    assert "Keyward GraphiQL" in html and 'id="keyward-token-input"' in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "<script>" not in html  # every script is a file under 'self'
    for cdn in ("unpkg", "jsdelivr", "cdnjs", "googleapis", "esm.sh"):
        assert cdn not in html


async def test_every_referenced_asset_is_served_locally(client: httpx.AsyncClient) -> None:
    html = (await page(client)).text
    references = re.findall(r"(?:src|href)=\"([^\"]+)\"", html)
    local = [ref for ref in references if not ref.startswith("data:")]
    assert len(local) == 6  # 2 stylesheets, 4 scripts
    expected_types = {".js": "javascript", ".css": "text/css"}
    for ref in local:
        assert ref.startswith("/static/"), ref
        response = await client.get(ref)
        assert response.status_code == 200, ref
        assert expected_types[Path(ref).suffix] in response.headers["content-type"], ref
        assert len(response.content) > 100


def test_vendored_css_loads_nothing_from_outside() -> None:
    css = (VENDORED / "graphiql.min.css").read_text()
    assert "@import" not in css
    urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
    assert urls and all(url.startswith("data:") for url in urls), {u[:40] for u in urls}
    assert "@font-face" in css  # the fonts exist, as data: URIs
    assert "sourceMappingURL" not in css


def test_vendored_javascript_has_no_fetched_external_url() -> None:
    for name in ("graphiql.min.js", "react.production.min.js", "react-dom.production.min.js"):
        text = (VENDORED / name).read_text()
        urls = set(re.findall(r"https?://[A-Za-z0-9./_\-]+", text))
        assert urls <= KNOWN_INERT_URLS, f"{name}: {sorted(urls - KNOWN_INERT_URLS)}"
        assert "sourceMappingURL" not in text
    own = (STATIC_DIR / "keyward" / "graphiql.js").read_text()
    assert "http://" not in own and "https://" not in own


def test_vendored_files_carry_licences_and_versions() -> None:
    for package in ("graphiql", "react", "react-dom"):
        assert "MIT License" in (VENDORED / f"LICENSE.{package}").read_text()
    readme = (VENDORED / "README.md").read_text()
    assert re.search(r"graphiql \d+\.\d+\.\d+", readme) and re.search(r"react \d+\.\d+\.\d+", readme)
    assert "scripts/vendor-graphiql" in readme


async def test_graphql_over_post_and_get_is_unchanged(client: httpx.AsyncClient, org_admin: OrgAdmin) -> None:
    auth = {"Authorization": f"Bearer {org_admin.token}"}
    posted = await client.post("/graphql", json={"query": "{ viewer { name } }"}, headers=auth)
    assert posted.json() == {"data": {"viewer": {"name": "admin@acme.test"}}}
    got = await client.get(
        "/graphql", params={"query": "{ viewer { name } }"}, headers={**auth, "Accept": "application/json"}
    )
    assert got.json() == {"data": {"viewer": {"name": "admin@acme.test"}}}
    assert "content-security-policy" not in posted.headers
