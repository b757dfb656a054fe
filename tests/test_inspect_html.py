"""``vmem inspect --html``: a self-contained page that escapes everything and renders in a browser.

The browser test runs Debian's ``chromium`` headless (``.ci/run`` installs it) and
skips, saying so, when no Chromium is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vmem.kernel import Agent, MemoryConfig
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall

ROOT = Path(__file__).resolve().parents[1]
NASTY = """<script>alert("pwned")</script> & <img src=x onerror="alert(1)"> 'q' </td></tr></table> &amp;"""
NASTY_TAG = '<b>tag</b>"'
TABS = ("core", "summary", "queue", "workset", "recall", "archival", "trace", "config")


def _call(name: str, cid: str, **arguments: object) -> ToolCall:
    return ToolCall(cid, name, {**arguments, "request_heartbeat": name != "send_message"})


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """(html file, its text, archival passages) for an agent whose every tier holds hostile text."""
    base = tmp_path_factory.mktemp("html")
    script = []
    for n in range(6):
        script += [
            Completion(tool_calls=[_call("archival_memory_insert", f"i{n}", content=f"fact {n}: {NASTY}",
                                         tags=[NASTY_TAG, f"t{n}"])]),
            Completion(tool_calls=[_call("archival_memory_search", f"s{n}", query=f"fact {n}")]),
            Completion(tool_calls=[_call("send_message", f"m{n}", message=f"reply {n}: {NASTY}")]),
        ]
    def respond(messages: list[dict], tools: list[dict]) -> Completion:
        if not tools:  # a summary request of the queue manager
            return Completion(text=f"summary: {NASTY}")
        return script.pop(0)

    agent = Agent.create(base / "agent", system=f"system: {NASTY}", driver=ScriptedDriver(respond),
                         blocks={"human": NASTY, "persona": {"value": "plain", "description": NASTY}},
                         config=MemoryConfig(window=4096, reserve_output=256))
    for n in range(6):
        agent.step(f"message {n}: {NASTY} " + "padding words " * 40)
    passages = len(agent.memory.store.archival)
    assert agent.memory.compile()[3]["content"].startswith("<summary of")  # a flush happened: there is a summary
    agent.close()
    out = base / "agent.html"
    p = subprocess.run([sys.executable, "-m", "vmem.app.cli", "inspect", str(base / "agent"), "--html", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    return out, out.read_text(encoding="utf-8"), passages


class _Elements(HTMLParser):
    """Every start tag (with attributes) and the document's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_page_is_self_contained_and_escapes_everything(page) -> None:
    _, text, passages = page
    parsed = _Elements()
    parsed.feed(text)
    tags = [t for t, _ in parsed.tags]
    assert tags.count("script") == 1 and tags.count("style") == 1  # ours, inline
    assert "img" not in tags and "iframe" not in tags and "link" not in tags
    for tag, attrs in parsed.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "src" not in attrs and "href" not in attrs, (tag, attrs)  # no external (or any) resource
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    body = "".join(parsed.text)
    assert body.count(NASTY) >= 4  # the hostile text comes back verbatim as text: block, system, messages...
    assert NASTY_TAG in body
    assert sum(1 for t, a in parsed.tags if t == "tr" and a.get("class") == "passage") == passages == 6
    assert sum(1 for t, a in parsed.tags if t == "input" and a.get("type") == "radio") == len(TABS)
    assert any(t == "svg" and a.get("id") == "context-chart" for t, a in parsed.tags)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


ERROR_HOOK = """<script>
(function () {
  function note(kind, msg) {
    var root = document.documentElement;
    root.setAttribute("data-js-errors", (root.getAttribute("data-js-errors") || "") + kind + ": " + msg + "; ");
  }
  window.onerror = function (msg) { note("error", msg); };
  window.addEventListener("unhandledrejection", function (e) { note("rejection", e.reason); });
  var original = console.error;
  console.error = function () {
    note("console", Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
})();
</script>"""


def _render(chromium: str, html_file: Path, tmp: Path, fragment: str = "") -> tuple[str, str]:
    """Chromium's DOM after load (and its stderr) for ``html_file`` with the error hook injected."""
    hooked = tmp / f"hooked-{html_file.name}"
    hooked.write_text(html_file.read_text(encoding="utf-8").replace("<head>", "<head>" + ERROR_HOOK, 1),
                      encoding="utf-8")
    p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-extensions", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
                        "--v=0", "--dump-dom", hooked.as_uri() + fragment],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)})
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, p.stderr


def test_the_page_renders_in_chromium_without_errors(page, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    html_file, _, passages = page
    dom, log = _render(chromium, html_file, tmp_path)
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert not console, console  # no console message at all: no error, no warning
    root = re.search(r"<html[^>]*>", dom).group(0)  # the script's reports are attributes of <html>
    assert "data-js-errors" not in root, root
    assert 'data-ready="yes"' in root  # the page's script ran to its end
    assert 'data-tab="core"' in root
    # the expected elements are in the rendered DOM
    assert '<svg id="context-chart"' in dom and 'class="watermark wm-warn"' in dom
    assert len(re.findall(r'<rect class="page r-queue"', dom)) >= 3
    assert len(re.findall(r'<tr class="passage"', dom)) == passages
    for tab in TABS:
        assert f'id="t-{tab}"' in dom and f'id="p-{tab}"' in dom
    # the filters were wired up (the script rewrote their counters)
    assert f"{passages} of {passages} shown" in dom
    # hostile text is text: escaped in the DOM, never an element
    assert "&lt;script&gt;alert(\"pwned\")&lt;/script&gt;" in dom
    rendered = _Elements()
    rendered.feed(dom)
    assert not [t for t, _ in rendered.tags if t in ("img", "iframe", "object", "embed")]
    assert not [(t, a) for t, a in rendered.tags if any(name.startswith("on") for name in a)]
    assert [t for t, _ in rendered.tags].count("script") == 2  # the page's and the injected error hook
    assert "".join(rendered.text).count(NASTY) >= 4
    # a link to a tab opens it
    dom_archival, log_archival = _render(chromium, html_file, tmp_path, "#archival")
    root = re.search(r"<html[^>]*>", dom_archival).group(0)
    assert 'data-tab="archival"' in root and "data-js-errors" not in root
    assert ":CONSOLE" not in log_archival
