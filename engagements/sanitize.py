"""Sanitising email HTML for display (SPEC S4), with nh3."""

from __future__ import annotations

import nh3

ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "code",
    "col",
    "colgroup",
    "dd",
    "div",
    "dl",
    "dt",
    "em",
    "font",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
ALLOWED_ATTRIBUTES = {
    "*": {"title", "dir", "lang", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "font": {"color"},
}


def sanitize_email_html(html: str, *, allow_remote_images: bool = False) -> str:
    """Return HTML safe to embed in our pages.

    Scripts, styles, forms, event handlers and `javascript:` URLs go. Remote images are
    dropped unless the reader asked for them: loading them would tell the sender the email
    was read. Images embedded in the message (`cid:`, `data:`) cannot be shown either until
    attachments are served inline, so they get the same placeholder.
    """

    def keep(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            if allow_remote_images and value.lower().startswith("https://"):
                return value
            return None
        return value

    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style", "title", "head"},
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=keep,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )


def has_remote_images(html: str) -> bool:
    """Whether the HTML asks for images from the network (to offer "show images")."""
    lowered = html.lower()
    return "<img" in lowered and (
        'src="http' in lowered or "src='http" in lowered or "src=http" in lowered
    )
