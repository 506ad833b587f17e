"""The report's blocks as markdown: what the terminal shows and ``report.md`` holds."""

from reg_runner.report.document import Figure, Heading, Link, Table, Text


def _cell(cell) -> str:
    text = f"[{cell.text}]({cell.href})" if isinstance(cell, Link) and cell.href else getattr(cell, "text", cell)
    return str(text).replace("|", "\\|")


def page(blocks: list) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Table):
            out += ["| " + " | ".join(block.columns) + " |", "|" + "---|" * len(block.columns)]
            out += ["| " + " | ".join(map(_cell, row)) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Figure):
            out += [f"![{block.path.stem}]({block.path.name})", ""]
        elif isinstance(block, Text):
            out.append(block.markdown)
        else:
            out += [block, ""]
    return "\n".join(out).rstrip("\n") + "\n"
