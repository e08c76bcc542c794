"""Simple formatting for email written in the CRM: a few marks in plain text become HTML.

**bold**, *italic*, [text](https://link), bare https:// links, lines starting with "- " as a
list, blank lines between paragraphs. The text is escaped first and the result cleaned with
nh3, so nothing the user types becomes markup of its own.
"""

from __future__ import annotations

import html
import re
from itertools import groupby

import nh3

_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+|mailto:[^\s)]+)\)")
_BARE_URL = re.compile(r"(?<![\"'=>])\bhttps?://[^\s<]+[^\s<.,;:!?)\]]")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![\w*])[*_](?=\S)(.+?)(?<=\S)[*_](?![\w*])")
_ITEM = re.compile(r"^\s*[-*•]\s+")


def _inline(text: str) -> str:
    links: list[str] = []

    def keep(anchor: str) -> str:
        links.append(anchor)
        return f"\x00{len(links) - 1}\x00"

    text = _LINK.sub(lambda m: keep(f'<a href="{m.group(2)}">{m.group(1)}</a>'), text)
    text = _BARE_URL.sub(lambda m: keep(f'<a href="{m.group(0)}">{m.group(0)}</a>'), text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: links[int(m.group(1))], text)


def to_html(text: str) -> str:
    """The HTML part for `text` (which stays the plain-text part as it is)."""
    blocks = []
    for block in re.split(r"\n\s*\n", html.escape(text.strip(), quote=True)):
        # Consecutive "- " lines make a list; other runs of lines make a paragraph.
        for is_list, run in groupby(block.splitlines(), key=lambda line: bool(_ITEM.match(line))):
            lines = list(run)
            if is_list:
                items = "".join(f"<li>{_inline(_ITEM.sub('', line))}</li>" for line in lines)
                blocks.append(f"<ul>{items}</ul>")
            else:
                blocks.append("<p>" + "<br>\n".join(_inline(line) for line in lines) + "</p>")
    return nh3.clean(
        "\n".join(blocks),
        tags={"p", "br", "strong", "em", "a", "ul", "li"},
        attributes={"a": {"href"}},
        url_schemes={"http", "https", "mailto"},
    )
