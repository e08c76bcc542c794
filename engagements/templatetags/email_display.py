from django import template
from django.utils.safestring import SafeString, mark_safe

from engagements.sanitize import has_remote_images, sanitize_email_html

register = template.Library()


@register.filter
def email_html(html: str, allow_remote_images: bool = False) -> SafeString:
    """Sanitised email HTML, safe to put in a page (SPEC S4)."""
    return mark_safe(sanitize_email_html(html, allow_remote_images=bool(allow_remote_images)))  # noqa: S308


@register.filter
def blocks_remote_images(html: str) -> bool:
    return has_remote_images(html)


@register.filter
def address_list(addresses: list[dict[str, str]]) -> str:
    return ", ".join(
        f"{a['name']} <{a['email']}>" if a.get("name") else a.get("email", "") for a in addresses
    )
