"""HTML building blocks of ``genefl report``: tables, Markdown and CSV as tables, embedded
PNGs, collapsible blocks and the page shell.

Every function returns a fragment of HTML text in which every piece of data has been
escaped; the page has its CSS inline and loads nothing (no script, font or stylesheet), so
it reads the same offline.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: a table with more rows than this is folded (``<details>``), its first rows visible
FOLD_ROWS = 40

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 2rem auto; max-width: 78rem; padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1rem; } h4 { font-size: 1rem; }
.meta { color: #555; }
.scroll { overflow-x: auto; margin: 0.5rem 0 1rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
caption { text-align: left; font-weight: 600; padding: 0.3rem 0; }
th, td { border: 1px solid #d0d0d0; padding: 0.2rem 0.5rem; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85rem; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
code { background: #f0f0f0; padding: 0 0.2rem; }
summary { cursor: pointer; color: #333; }
"""


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------- cells


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def is_numeric(text: str) -> bool:
    """Whether a cell reads as a number (``n/a`` and ``12.3 ± 0.4`` count as numbers)."""
    head = text.strip().split(" ± ")[0].strip()
    return head in ("n/a", "nan", "inf", "-inf") or _number(head) is not None


def short_number(text: str) -> str:
    """A float with more than 6 significant digits shortened to 6 (but never to fewer
    than its integer digits); anything else (integers, words, ``12.3 ± 0.4``) as it is.
    """
    stripped = text.strip()
    value = _number(stripped)
    if value is None or not math.isfinite(value) or re.fullmatch(r"[+-]?\d+", stripped):
        return text
    digits = re.sub(r"\D", "", re.split(r"[eE]", stripped)[0]).lstrip("0")
    whole = len(str(int(abs(value)))) if abs(value) >= 1 else 0
    return f"{value:.{max(6, whole)}g}" if len(digits) > 6 else text


def cell(text: Any, header: bool = False) -> str:
    """One ``<td>`` (numbers right-aligned and shortened, the full value as a tooltip) or
    ``<th>``.
    """
    text = "" if text is None else str(text)
    if header:
        return f"<th>{esc(text)}</th>"
    short = short_number(text)
    title = f' title="{esc(text)}"' if short != text else ""
    kind = ' class="num"' if text and is_numeric(text) else ""
    return f"<td{kind}{title}>{esc(short)}</td>"


# --------------------------------------------------------------------------- blocks


def table(
    headers: Sequence[Any], rows: Sequence[Sequence[Any]], caption: str = "",
    fold: int = FOLD_ROWS,
) -> str:
    """An HTML table; rows shorter than the header are padded, longer ones keep their extra
    cells (under empty headers). More than ``fold`` rows: the rest in a ``<details>``.
    """
    width = max([len(headers)] + [len(r) for r in rows])
    head = "".join(cell(h, header=True) for h in list(headers) + [""] * (width - len(headers)))

    def body(part: Sequence[Sequence[Any]]) -> str:
        return "".join(
            "<tr>" + "".join(cell(c) for c in list(r) + [""] * (width - len(r))) + "</tr>"
            for r in part
        )

    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    shown = f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>' \
        f"<tbody>{body(rows[:fold])}</tbody></table></div>"
    if len(rows) <= fold:
        return shown
    rest = f'<div class="scroll"><table><thead><tr>{head}</tr></thead>' \
        f"<tbody>{body(rows[fold:])}</tbody></table></div>"
    return shown + details(f"{len(rows) - fold} more rows", rest)


def key_value_table(items: Iterable[tuple[str, Any]], caption: str = "") -> str:
    """A two-column table (name, value)."""
    return table(["name", "value"], [[k, v] for k, v in items], caption, fold=10**9)


def csv_table(text: str, caption: str = "") -> str:
    """A CSV file's text as a table (first row = header); ragged rows are tolerated."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows:
        return paragraph(f"{caption}: empty" if caption else "empty")
    return table(rows[0], rows[1:], caption)


def details(summary: str, body: str, open_: bool = False) -> str:
    """A collapsible block (``body`` is HTML)."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def preformatted(text: str) -> str:
    """Text as it is, in a ``<pre>``."""
    return f"<pre>{esc(text)}</pre>"


def paragraph(text: str) -> str:
    """Plain text as a paragraph."""
    return f"<p>{esc(text)}</p>"


def png_image(data: bytes, name: str) -> str:
    """A PNG embedded as base64 in a figure captioned ``name``; a note if it is not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        return paragraph(f"{name}: not a PNG file; left out")
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{esc(name)}">'
        f"<figcaption>{esc(name)}</figcaption></figure>"
    )


def section(title: str, body: str, level: int = 2) -> str:
    """A heading and its content (``body`` is HTML)."""
    return f"<section><h{level}>{esc(title)}</h{level}>{body}</section>"


# --------------------------------------------------------------------------- Markdown


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def inline_markdown(text: str) -> str:
    """Escaped text with ``code`` and **bold** spans."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(esc(text[last:match.start()]))
        code, bold = match.groups()
        out.append(f"<code>{esc(code)}</code>" if code is not None else f"<b>{esc(bold)}</b>")
        last = match.end()
    out.append(esc(text[last:]))
    return "".join(out)


def pipe_cells(line: str) -> list[str]:
    r"""The cells of one pipe-table row (``\|`` is a literal bar)."""
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _is_rule(line: str) -> bool:
    return bool(re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", line.strip()))


def _blocks(lines: list[str]) -> Iterable[tuple[str, list[str]]]:
    """``(kind, lines)`` blocks: ``heading``, ``table``, ``code`` or ``text``."""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")),
                       len(lines))
            yield "code", lines[i + 1:end]
            i = end + 1
        elif re.match(r"#{1,6} ", line):
            yield "heading", [line]
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            end = i + 2
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            yield "table", lines[i:end]
            i = end
        else:
            end = i + 1
            while end < len(lines) and lines[end].strip() and not re.match(
                r"#{1,6} |```|\s*\|", lines[end]
            ):
                end += 1
            yield "text", lines[i:end]
            i = end


def markdown(text: str, base_level: int = 3) -> str:
    """A Markdown file as HTML: headings (the file's top level becomes ``base_level``),
    pipe tables, fenced code and paragraphs with ``code``/**bold**; anything else as text.
    """
    blocks = list(_blocks(text.splitlines()))
    top = min((len(b[0].split(" ", 1)[0]) for k, b in blocks if k == "heading"), default=1)
    out = []
    for kind, lines in blocks:
        if kind == "heading":
            hashes, title = lines[0].split(" ", 1)
            level = min(6, base_level + len(hashes) - top)
            out.append(f"<h{level}>{inline_markdown(title.strip())}</h{level}>")
        elif kind == "table":
            out.append(table(pipe_cells(lines[0]), [pipe_cells(r) for r in lines[2:]]))
        elif kind == "code":
            out.append(preformatted("\n".join(lines)))
        else:
            out.append(f"<p>{inline_markdown(' '.join(x.strip() for x in lines))}</p>")
    return "".join(out)


# --------------------------------------------------------------------------- page


def page(title: str, body: str) -> str:
    """A whole HTML document: inline CSS, no external resource, no script."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
        "</body></html>\n"
    )
