"""Headless Chromium for the tests that need a real browser (CORS, keys in pages, the ops page).

Debian's ``chromium`` is installed on first use when missing, as the README's set-up does.
"""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading

from streamrec.stack.process import free_port
from streamrec.stack.system import SystemPackage, ensure_installed


def chromium() -> str:
    """The ``chromium`` executable (installed first if missing)."""
    ensure_installed([SystemPackage("chromium", "chromium")], say=print)
    found = shutil.which("chromium")
    assert found, "chromium is not on PATH after its installation"
    return found


def browse(browser: str, url: str, *extra: str, budget_ms: int = 6000) -> subprocess.CompletedProcess:
    """Load ``url`` headless and let its scripts run for ``budget_ms`` of virtual time."""
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--window-size=1500,2000", f"--virtual-time-budget={budget_ms}", *extra, url],
        capture_output=True, text=True, timeout=120,
    )


def element_text(browser: str, url: str, element_id: str = "out") -> str:
    """The text of ``<pre id=element_id>`` once the page's scripts have run."""
    result = browse(browser, url, "--dump-dom", budget_ms=5000)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(rf'<pre id="{element_id}">(.*?)</pre>', result.stdout)
    assert found, f"no <pre id={element_id!r}> in the page at {url}: {result.stdout[-2000:]}"
    return found.group(1)


class Page:
    """One static page on an origin of its own (127.0.0.1:<free port>)."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
