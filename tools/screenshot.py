"""Screenshot one page of the dashboard in headless Chromium (the README's picture is made with it).

    .venv/bin/python tools/screenshot.py --out assets/screenshot.png --page Attributions --height 1230
    .venv/bin/python tools/screenshot.py --out /tmp/models.png --page Models --full

It starts ``streamlit run app.py`` on a free port with an empty workspace (so the page shows what a
fresh checkout shows: the built-in digits and the default teacher and student from ``assets/``;
``--workspace`` shows another), opens the page by clicking its link in the sidebar, waits until the
script has finished, refuses to save a page that shows an error (``--allow-errors`` saves it anyway)
and writes a PNG, palette-compressed when that keeps it under ``--max-kb``.

Needs Debian's chromium at /usr/bin/chromium (``apt-get install chromium``; for the page icons,
``fonts-noto-color-emoji``); Playwright's own browser download is never used.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.live_app import CHROMIUM_ARGS, free_port, open_page, start_server, stop_server, wait_idle  # noqa: E402

CONTENT_HEIGHT_JS = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    const block = document.querySelector('[data-testid="stMainBlockContainer"]');
    const sidebar = document.querySelector('[data-testid="stSidebarContent"]');
    return Math.ceil(Math.max(main ? main.scrollHeight : 0,
                              block ? block.getBoundingClientRect().bottom + window.scrollY : 0,
                              sidebar ? sidebar.scrollHeight : 0));
}"""


def log(msg: str) -> None:
    print(f"[screenshot] {msg}", file=sys.stderr, flush=True)


def save_png(png: bytes, out: Path, max_kb: int) -> None:
    """As it is when small enough, else quantised to a 256-colour palette (the UI has few colours)."""
    if len(png) > max_kb * 1024:
        from PIL import Image

        img = Image.open(io.BytesIO(png)).convert("RGB")
        buf = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True
        )
        if len(buf.getvalue()) < len(png):
            png = buf.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    kb = len(png) / 1024
    log(f"wrote {out} ({kb:.0f} KB{'' if kb <= max_kb else f', over the {max_kb} KB asked for'})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="the PNG to write")
    ap.add_argument("--page", default="Overview", help="the page's title in the sidebar (default: Overview)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--full", action="store_true", help="the whole page, not just the first screen")
    ap.add_argument("--workspace", type=Path, help="KDVIZ_HOME to show (default: a new empty one)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--max-kb", type=int, default=400, help="compress to a palette PNG above this size")
    ap.add_argument("--allow-errors", action="store_true", help="save even when the page shows an error")
    args = ap.parse_args(argv)

    if not Path(args.chromium).exists():
        raise SystemExit(f"{args.chromium} not found: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="kdviz-screenshot-") as tmp:
        env = dict(
            os.environ,
            KDVIZ_HOME=str(args.workspace or Path(tmp) / "runs"),
            STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        )
        port = free_port()
        log(f"starting streamlit on port {port}")
        proc = start_server(
            port, env, Path(tmp) / "streamlit.log", extra_args=["--client.toolbarMode", "minimal"]
        )
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
                try:
                    page = browser.new_page(viewport={"width": args.width, "height": args.height})
                    js_errors: list[str] = []
                    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
                    page.goto(f"http://127.0.0.1:{port}/")
                    wait_idle(page, settle_s=1.5)
                    try:
                        open_page(page, args.page)
                    except LookupError as exc:
                        raise SystemExit(str(exc)) from None
                    errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
                    texts = [errors.nth(i).inner_text().strip() for i in range(errors.count())] + js_errors
                    if texts and not args.allow_errors:
                        raise SystemExit(
                            f"page {args.page!r} shows errors, not saved:\n" + "\n---\n".join(texts)
                        )
                    if args.full:
                        height = max(args.height, page.evaluate(CONTENT_HEIGHT_JS))
                        page.set_viewport_size({"width": args.width, "height": min(height, 8000)})
                        wait_idle(page, settle_s=1.0)
                    page.mouse.move(0, 0)  # no hover effects
                    save_png(page.screenshot(), args.out, args.max_kb)
                finally:
                    browser.close()
        finally:
            stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
