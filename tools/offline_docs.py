"""Makes the pages `make docs` builds work with no network and from any address: Redocly's renderer shows
its attribution logo from its CDN (cdn.redoc.ly), so each such image becomes an inline SVG; and it
answers an anchor it has no section for with a "No page" view, so such an address is taken back to the
page's top. Usage: python tools/offline_docs.py PAGE.html..."""

import base64
import re
import sys
from pathlib import Path

CDN_IMAGE = re.compile(r"https://cdn\.redoc\.ly/[A-Za-z0-9/_.-]+\.svg")
LOGO = base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="16" viewBox="0 0 64 16">'
    b'<text x="0" y="12" font-family="sans-serif" font-size="12" fill="#8a8a8a">Redocly</text></svg>').decode()


HYDRATE = "hydrate(__redoc_definition, __redoc_options, document.getElementById('redoc'));"
# Run once the renderer has drawn the address it was given (it draws asynchronously: a few tries).
TO_TOP = """
      (function toTopWhenUnknown(tries) {
        const root = document.getElementById('redoc');
        if (location.hash && root && (root.textContent || '').includes('No page at this address')) {
          location.replace(location.pathname + location.search);
        } else if (tries > 0) {
          setTimeout(() => toTopWhenUnknown(tries - 1), 100);
        }
      })(50);"""


def offline(page: str) -> str:
    page = CDN_IMAGE.sub(f"data:image/svg+xml;base64,{LOGO}", page)
    if HYDRATE in page and "toTopWhenUnknown" not in page:
        page = page.replace(HYDRATE, HYDRATE + TO_TOP, 1)
    return page


def main(paths: list[str]) -> int:
    for path in map(Path, paths):
        path.write_text(offline(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
