"""HTML building blocks of the report: escaped tables, inlined figures, the page template.

Every string that reaches the page goes through `esc` unless it is a `Raw` fragment built here,
so names and token texts from a model or a data set can never inject markup, and invisible or
direction-changing characters (U+202E, U+200B, U+2066...) are shown escaped (`\u202e`), as the CLI
shows them, instead of silently reordering or hiding the text around them.

>>> table(["layer", "token"], [[1, "<s>"]])
'<table>...<td>&lt;s&gt;</td>...</table>'
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from .figures import png_bytes, svg_bytes


class Raw(str):
    """An HTML fragment built by this package (already escaped); inserted as is."""


def _escape_char(c: str) -> str:
    code = ord(c)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a JSON-style surrogate pair, so JSON literals stay valid
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def visible(text: str) -> str:
    """`text` with every non-printable character (Python's `str.isprintable`, what `repr` escapes:
    bidi controls, zero-width and other format characters, controls) written as `\\uXXXX`;
    newlines and tabs stay."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else _escape_char(c) for c in text)


def esc(value: Any) -> str:
    """Escaped text of any value (markup and invisible characters); Raw fragments pass through."""
    return value if isinstance(value, Raw) else html.escape(visible(str(value)), quote=True)


def token(text: Any) -> Raw:
    """A token's text as a quoted literal, so whitespace and newlines are visible: "\\n", " the"."""
    return Raw(f"<code>{esc(json.dumps(str(text), ensure_ascii=False))}</code>")


def number(value: Any, digits: int = 4) -> str:
    """Short form of a number ('744', '7.312'); '' for missing, text as is."""
    if value is None:
        return ""
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return str(value)


def check(ok: bool) -> Raw:
    """A mark that reads without colour: 'yes' / 'no' plus a symbol."""
    return Raw('<span class="yes">&#10003; yes</span>' if ok else '<span class="no">&#10007; no</span>')


def table(columns: list[str], rows: list[list[Any]], *, highlight: list[bool] | None = None,
          cls: str = "") -> Raw:  # fmt: skip
    """A <table>; cells are escaped unless Raw; `highlight` marks rows (e.g. the SEs)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        mark = ' class="hl"' if highlight and highlight[i] else ""
        body.append(f"<tr{mark}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    # The box scrolls sideways, so a table wider than the page is never cut off.
    return Raw(
        f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>'
    )


def paragraphs(*texts: str) -> Raw:
    """Plain-text paragraphs (escaped)."""
    return Raw("".join(f"<p>{esc(t)}</p>" for t in texts))


@dataclass
class Section:
    """One part of the page. `files` are extra files written next to report.html (figures)."""

    id: str
    title: str
    body: str
    files: dict[str, bytes] = field(default_factory=dict)


def figure(fig: Figure, name: str, caption: str, alt: str) -> tuple[Raw, dict[str, bytes]]:
    """Inline PNG (base64) plus the PNG and SVG files for `figures/<name>.*`."""
    png = png_bytes(fig)
    return image(png, caption, alt), {f"figures/{name}.png": png, f"figures/{name}.svg": svg_bytes(fig)}


def image(png: bytes, caption: str, alt: str) -> Raw:
    """An inlined PNG written by another step (e.g. sinks_maps.png), with its caption."""
    data = base64.b64encode(png).decode("ascii")
    return Raw(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
               f"<figcaption>{esc(caption)}</figcaption></figure>")  # fmt: skip


CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1a1a1a;
       max-width: 1200px; margin: 0 auto; padding: 0 24px 48px; background: #fff; }
h1 { font-size: 28px; margin: 24px 0 4px; } h2 { font-size: 22px; border-bottom: 2px solid #ddd;
     padding-bottom: 4px; margin-top: 40px; } h3 { font-size: 18px; }
nav { font-size: 14px; color: #555; } nav a { margin-right: 12px; }
.banner { background: #fff3cd; border: 2px solid #b8860b; padding: 12px 16px; font-weight: 600;
          border-radius: 6px; margin: 16px 0; }
.answer { font-size: 18px; background: #eef5fb; border-left: 6px solid #0072B2; padding: 10px 16px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 14px; }
.scroll { overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } tr.hl td { background: #fdebd3; font-weight: 600; }
td code, p code { background: #f5f5f5; padding: 0 3px; white-space: pre-wrap; }
.yes { color: #005a8c; } .no { color: #666; }
figure { margin: 16px 0 28px; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 15px; color: #333; max-width: 950px; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 13px; white-space: pre-wrap; }
.note { color: #555; font-size: 14px; } .warn { color: #8a4b00; font-weight: 600; }
"""


def render_page(title: str, sections: list[Section]) -> str:
    """The whole self-contained page: inline CSS, no scripts, no external resources."""
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections if s.title)
    parts = []
    for s in sections:
        heading = f"<h2>{esc(s.title)}</h2>" if s.title else ""
        parts.append(f'<section id="{esc(s.id)}">{heading}{s.body}</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No network: forbid every external load, allow only inline styles and data: images.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><nav>{nav}</nav>{''.join(parts)}</body></html>\n"
    )
