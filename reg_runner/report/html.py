"""The report's blocks as one self-contained page, ``report.html``, that opens from the disk: the figures embedded,
every table sortable by any column (a click on its header; again to reverse), the runs linked to their folders."""

import base64
import html
import re

from reg_runner.report.document import Figure, Heading, Link, Table, Text

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1800px; }
h1 { font-size: 20px; word-break: break-all; } h2 { font-size: 17px; margin-top: 28px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[data-dir="1"]::after { content: " \\25B2"; } th[data-dir="-1"]::after { content: " \\25BC"; }
tr:nth-child(even) td { background: #fafafa; }
.wide { overflow-x: auto; } img { max-width: 100%; display: block; margin: 12px 0; }
code { background: #f3f3f3; padding: 0 3px; } pre { background: #f7f7f7; padding: 8px; overflow-x: auto; }
"""

# a column sorts as numbers when every filled cell starts with one ("0.9185 ± 0.0018", "3 of 4", "1e-4"),
# else as text; "-" and empty cells go last either way
SCRIPT = """
for (const th of document.querySelectorAll("th")) th.addEventListener("click", () => {
  const table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  const dir = th.dataset.dir === "1" ? -1 : 1;
  for (const other of table.querySelectorAll("th")) delete other.dataset.dir;
  th.dataset.dir = dir;
  const text = r => r.cells[col].textContent.trim(), empty = t => t === "" || t === "-";
  const rows = [...body.rows], filled = rows.map(text).filter(t => !empty(t));
  const numeric = filled.length > 0 && filled.every(t => !isNaN(parseFloat(t)));
  rows.sort((a, b) => {
    const x = text(a), y = text(b);
    if (empty(x) || empty(y)) return empty(x) - empty(y);
    const c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
    return dir * c;
  });
  body.append(...rows);
});
"""


def _inline(text: str) -> str:
    """A paragraph's text, escaped, its `code` spans kept as code."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def _cell(cell) -> str:
    if isinstance(cell, Link):
        text = html.escape(cell.text)
        return f'<a href="{html.escape(cell.href)}">{text}</a>' if cell.href else text
    return html.escape(str(cell))


def _image(name: str, data: bytes) -> str:
    return (f'<img alt="{html.escape(name)}" title="{html.escape(name)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode()}">')


def page(blocks: list, title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"]
    sections = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="s{sections.index(block)}"' if block in sections else ""
            out.append(f"<h{block.level}{anchor}>{_inline(block.text)}</h{block.level}>")
            if block.level == 1 and len(sections) > 1:  # the sections, one click away: a runs table can be long
                out.append("<nav>" + " · ".join(f'<a href="#s{i}">{html.escape(s.text.split(" (")[0])}</a>'
                                                for i, s in enumerate(sections)) + "</nav>")
        elif isinstance(block, Table):
            out.append('<div class="wide"><table><thead><tr>'
                       + "".join(f"<th>{html.escape(c)}</th>" for c in block.columns) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows]
            out.append("</tbody></table></div>")
        elif isinstance(block, Figure):
            out.append(_image(block.path.stem, block.data))
        elif isinstance(block, Text):
            out.append(f"<pre>{html.escape(block.markdown.strip())}</pre>")
            out += [_image(path.stem, data) for path, data in block.figures]
        else:
            out.append(f"<p>{_inline(block)}</p>")
    out.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"
