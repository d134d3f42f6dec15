"""The report's sections as Markdown (plots linked by file name) and as one self-contained HTML
page, and the Markdown with its plots embedded as data URIs for the Prefect UI."""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

import pandas as pd

from irv2_core.records import ReportRecord

Block = str | pd.DataFrame | Path  # a paragraph, a table or a PNG beside the report
Section = tuple[str, list[Block]]


def render_markdown(sections: list[Section]) -> str:
    lines = ["# Inception-ResNet-v2 run report", ""]
    for title, blocks in sections:
        lines += [f"## {title}", ""]
        for body in blocks:
            if isinstance(body, Path):
                lines += [f"![{body.stem}]({body.name})", ""]
            elif isinstance(body, str):
                lines += [body, ""]
            elif body.empty:
                lines += ["(none)", ""]
            else:
                lines += [_md_table(body), ""]
    return "\n".join(lines)


def _md_table(frame: pd.DataFrame) -> str:
    """GitHub Markdown table without the optional ``tabulate`` dependency."""
    cells = [
        [("" if pd.isna(v) else str(v)).replace("|", "\\|") for v in row] for row in frame.values
    ]
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([header, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def png_data_uri(path: str | os.PathLike[str]) -> str:
    """The PNG file at *path* as a ``data:image/png;base64,...`` URI."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^()\s/\\:]+\.png)\)")


def embed_images(markdown: str, folder: str | os.PathLike[str]) -> str:
    """*markdown* with each ``![alt](name.png)`` of a PNG in *folder* replaced by a data URI.

    A Markdown artifact in the Prefect UI resolves a relative link against the UI's own URL, so
    a plot must travel inside the text; ``report.md`` on disk keeps its short relative links."""
    folder = Path(folder)

    def inline(match: re.Match[str]) -> str:
        path = folder / match.group(2)
        if not path.is_file():
            return match.group(0)
        return f"![{match.group(1)}]({png_data_uri(path)})"

    return _MD_IMAGE.sub(inline, markdown)


def artifact_markdown(report: ReportRecord) -> str:
    """The report's Markdown with its plots embedded: the ``irv2-report`` artifact's text."""
    path = Path(report.markdown)
    return embed_images(path.read_text(encoding="utf-8"), path.parent)


def render_html(sections: list[Section]) -> str:
    """A self-contained page: the plots are embedded as data URIs."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>IRv2 run report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>",
        "<h1>Inception-ResNet-v2 run report</h1>",
    ]
    for title, blocks in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for body in blocks:
            if isinstance(body, Path):
                parts.append(
                    f"<p><img src='{png_data_uri(body)}' alt='{html.escape(body.stem)}'></p>"
                )
            elif isinstance(body, str) and "\n" in body:  # a Markdown block: kept as laid out
                parts.append(f"<pre>{html.escape(body)}</pre>")
            elif isinstance(body, str):
                parts.append(f"<p>{html.escape(body)}</p>")
            elif body.empty:
                parts.append("<p>(none)</p>")
            else:
                parts.append(body.to_html(index=False, na_rep=""))
    parts.append("</body></html>")
    return "\n".join(parts)
