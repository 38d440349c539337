"""GraphiQL in a real browser with no internet: Debian's chromium, headless, every non-loopback request
blocked and recorded. The page loads from the live server, a bearer token goes into the token field, a
query runs with a click on GraphiQL's run button, and its result shows in the page; a screenshot is kept
(in the test's tmp dir, and at $GRAPHIQL_SCREENSHOT when set)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import OrgAdmin, tool_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdp_browser_support import is_loopback, offline_chromium  # noqa: E402

pytestmark = pytest.mark.live

RESULT = "document.querySelector('.result-window .CodeMirror')?.CodeMirror?.getValue() || ''"
QUERY_EDITOR = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"


async def test_graphiql_runs_a_query_offline(live_server: str, org_admin: OrgAdmin, tmp_path: Path) -> None:
    chromium = tool_or_skip("chromium")
    async with offline_chromium(chromium) as page:
        await page.send("Page.navigate", {"url": f"{live_server}/graphql"})
        await page.wait_for("!!document.querySelector('.graphiql-container .graphiql-execute-button')")
        await page.wait_for(f"!!{QUERY_EDITOR}")

        await page.type_into("#keyward-token-input", org_admin.token)
        await page.evaluate(f"{QUERY_EDITOR}.setValue('{{ viewer {{ name kind productRole }} }}')")
        await page.click(".graphiql-execute-button")
        text = await page.wait_for(f"(() => {{ const t = {RESULT}; return t.includes('viewer') && t; }})()")
        assert json.loads(text) == {
            "data": {"viewer": {"name": "admin@acme.test", "kind": "user", "productRole": "admin"}}
        }
        # What a person sees: the result is rendered in the response pane, not only held by the editor.
        shown = await page.evaluate("document.querySelector('.result-window').innerText")
        assert "admin@acme.test" in shown

        shot = await page.screenshot(tmp_path / "graphiql.png")
        keep = os.environ.get("GRAPHIQL_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)

        # Without a token the same query is refused: the token field is what authenticated it ...
        await page.evaluate("document.getElementById('keyward-token-input').value = ''")
        await page.click(".graphiql-execute-button")
        refused = await page.wait_for(
            f"(() => {{ const t = {RESULT}; return t.includes('UNAUTHENTICATED') && t; }})()"
        )
        assert json.loads(refused)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

        # ... and GraphiQL's header editor is the other way to send it.
        await page.click(".graphiql-editor-tools button:nth-of-type(2)")  # the "Headers" tab
        headers = json.dumps({"Authorization": f"Bearer {org_admin.token}"})
        await page.wait_for(
            "!!document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror')"
        )
        await page.evaluate(
            "document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror')"
            f".CodeMirror.setValue({json.dumps(headers)})"
        )
        await page.click(".graphiql-execute-button")
        again = await page.wait_for(
            f"(() => {{ const t = {RESULT}; return t.includes('admin@acme.test') && t; }})()"
        )
        assert json.loads(again)["data"]["viewer"]["name"] == "admin@acme.test"

        assert page.blocked == [], f"the page tried to reach beyond loopback: {page.blocked}"
        assert [url for url in page.requested if not is_loopback(url)] == []
        assert any(url.endswith("/static/graphiql/graphiql.min.js") for url in page.requested)
        assert await page.csp_violations() == []
        assert page.exceptions == []
        assert page.failed_loads == []
        assert page.console_errors == []
    assert shot.stat().st_size > 10_000


async def test_the_harness_catches_what_it_must(live_server: str) -> None:
    """Control: an attempt to leave loopback is recorded, and the page's CSP stops another origin."""
    chromium = tool_or_skip("chromium")
    async with offline_chromium(chromium) as page:
        await page.send("Page.navigate", {"url": "about:blank"})
        await page.evaluate("new Image().src = 'http://example.com/pixel.png'; true")
        for _ in range(100):
            if page.blocked:
                break
            await page.evaluate("new Promise(r => setTimeout(r, 50))")
        assert page.blocked == ["http://example.com/pixel.png"]

        await page.send("Page.navigate", {"url": f"{live_server}/graphql"})
        await page.wait_for("!!document.querySelector('.graphiql-container')")
        await page.evaluate("fetch('https://cdn.example.net/x.js').catch(() => null)")
        violations = await page.wait_for("window.__cspViolations.length && window.__cspViolations")
        assert violations == ["connect-src https://cdn.example.net/x.js"]
        assert page.blocked == ["http://example.com/pixel.png"]  # the CSP stopped it before the network
