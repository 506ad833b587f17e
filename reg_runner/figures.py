"""A matplotlib figure as PNG bytes (the report's, the landscape's, the range test's and a search's figures)."""

import io


def to_png(fig, dpi: int, tight: bool = False) -> bytes:
    """``tight``: cropped to what is drawn (``bbox_inches="tight"``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buffer.getvalue()
