"""Makes the pages `make docs` builds work with no network: Redocly's renderer shows its attribution logo
from its CDN (cdn.redoc.ly), so each such image becomes an inline SVG of the same name. Usage:
python tools/offline_docs.py PAGE.html..."""

import base64
import re
import sys
from pathlib import Path

CDN_IMAGE = re.compile(r"https://cdn\.redoc\.ly/[A-Za-z0-9/_.-]+\.svg")
LOGO = base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="16" viewBox="0 0 64 16">'
    b'<text x="0" y="12" font-family="sans-serif" font-size="12" fill="#8a8a8a">Redocly</text></svg>').decode()


def offline(page: str) -> str:
    return CDN_IMAGE.sub(f"data:image/svg+xml;base64,{LOGO}", page)


def main(paths: list[str]) -> int:
    for path in map(Path, paths):
        path.write_text(offline(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
