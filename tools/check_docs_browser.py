"""Open the built documentation in a real browser and fail on what a reader would hit: a missing image, a broken
internal link, a console error. Saves a full-page screenshot of each page looked at.

    .venv/bin/pip install -e ".[docs,browser]"   # and Debian's chromium: apt install chromium
    .venv/bin/python -m tools.check_docs_browser --out runs/docs-screenshots      # builds the docs first
    .venv/bin/python -m tools.check_docs_browser --html docs/_build/html --out runs/docs-screenshots

Headless Chromium (``/usr/bin/chromium``, driven by Playwright) loads each page from a local HTTP server. Exit status
0 when every page is clean, 1 with one line per problem otherwise, 2 when no browser is available.
"""
import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import List, Optional
from urllib.parse import urljoin, urlparse

ROOT = Path(__file__).resolve().parents[1]
#: The pages a newcomer reads first, and the generated results pages.
PAGES = ("index.html", "models.html", "study.html", "benchmarks.html", "ledger.html", "guide_blocks.html")
#: Flags that keep Chromium off the network and quiet in a sandboxed container (no GPU, no background services).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def find_chromium() -> Optional[str]:
    """The Chromium executable (Debian's ``chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def build_docs(out: Path) -> Path:
    """Build the HTML documentation with warnings as errors into ``out``."""
    subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d",
                    str(out / ".doctrees"), str(ROOT / "docs"), str(out)], check=True, cwd=ROOT)
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(folder: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check_pages(html: Path, screenshots: Path, pages=PAGES, chromium: Optional[str] = None) -> List[str]:
    """Problems found on ``pages`` of the built documentation in ``html``; screenshots go to ``screenshots``."""
    from playwright.sync_api import sync_playwright

    problems: List[str] = []
    screenshots.mkdir(parents=True, exist_ok=True)
    server = _serve(html)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium or find_chromium(), args=CHROMIUM_ARGS)
            for name in pages:
                found: List[str] = []
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda message, found=found: found.append(
                    f"console error: {message.text} ({message.location.get('url', '')})")
                        if message.type == "error" else None)
                page.on("pageerror", lambda error, found=found: found.append(f"script error: {error}"))
                page.on("response", lambda response, found=found: found.append(
                    f"HTTP {response.status}: {response.url}") if response.status >= 400 else None)
                page.goto(urljoin(base, name), wait_until="load")
                broken_images = page.eval_on_selector_all(
                    "img", "images => images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
                found += [f"image does not load: {src}" for src in broken_images]
                for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
                    url = urlparse(href)
                    if url.netloc != urlparse(base).netloc:
                        continue
                    target = html / url.path.lstrip("/")
                    if not (target.is_file() or (target / "index.html").is_file()):
                        found.append(f"broken internal link: {url.path}")
                page.screenshot(path=str(screenshots / f"{Path(name).stem}.png"), full_page=True)
                page.close()
                problems += [f"{name}: {problem}" for problem in dict.fromkeys(found)]
            browser.close()
    finally:
        server.shutdown()
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, help="an already built documentation (default: build it now)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "docs-screenshots", help="screenshots go here")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    try:
        import playwright  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        print("check_docs_browser: no Chromium or no Playwright here (apt install chromium; pip install -e "
              "'.[browser]'); nothing checked")
        return 2
    with tempfile.TemporaryDirectory() as folder:
        html = args.html or build_docs(Path(folder) / "html")
        problems = check_pages(html, args.out, chromium=chromium)
    for problem in problems:
        print(problem)
    print(f"check_docs_browser: {len(PAGES)} pages, {len(problems)} problems; screenshots in {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
