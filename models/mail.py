"""E-mail composition: each e-mail's text and HTML rendered from one Jinja2 template (onboards/templates/mail)."""

import re
from collections.abc import Callable
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

# The templates are package data of onboards (they sit beside the pages'), read here as files.
TEMPLATES = Path(__file__).resolve().parent.parent / "onboards" / "templates"


def _text_paragraph(text: str) -> str:
    return f"{text}\n"


def _text_button(url: str, label: str) -> str:
    return f"{label}: {url}\n"


def _html_paragraph(text: str) -> Markup:
    return Markup("<p>%s</p>") % text


def _html_button(url: str, label: str) -> Markup:
    return Markup('<p><a href="%s" style="font-weight:bold">%s</a></p>') % (url, label)


def _environment(html: bool) -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=html, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


_TEXT, _HTML = _environment(False), _environment(True)
PARTS: dict[bool, dict[str, Callable]] = {False: {"para": _text_paragraph, "button": _text_button},
                                          True: {"para": _html_paragraph, "button": _html_button}}


def compose(kind: str, subject: str, **context: object) -> tuple[str, str]:
    """The text and the HTML of an e-mail of `kind` (its template mail/<kind>.j2). The HTML holds no remote
    image, no style sheet and no script: only the text's paragraphs and links."""
    text = _TEXT.get_template(f"mail/{kind}.j2").render(html=False, subject=subject, **PARTS[False], **context)
    html = _HTML.get_template(f"mail/{kind}.j2").render(html=True, subject=subject, **PARTS[True], **context)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n", html
