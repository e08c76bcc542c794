"""Attachment file names from outside, made safe in one place (STYLE 4b).

A name comes from whoever sent the email or uploaded the file, so it may be anything: a path
(``../../../etc/passwd``), a Windows device (``CON.txt``), control characters, a NUL, 300
characters of multi-byte text, or nothing at all. Three uses, three functions:

- `storage_name`: what the file is stored under. `Attachment`'s ``upload_to`` calls it, so
  every path that stores an attachment file does.
- `display_name`: the name shown on timelines (HTML-escaped by the templates) and kept in
  ``Attachment.filename``: the sender's own name, without what a text column cannot hold or a
  reader would be fooled by.
- `content_disposition`: the download header, offering the shown name (RFC 6266, RFC 8187).

`safe_content_type` does the same for the attachment's declared type.

None of them raises on any string.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from urllib.parse import quote

# Bytes (UTF-8) a stored name may take, extension included. The stored path is the upload_to
# prefix (attachments/team_<id>/<24 hex>/: 62 characters at most) plus this plus Django's
# suffix on a collision (_ and 7 characters): far under Attachment.file's max_length (500),
# and far under the 255 bytes file systems allow one name.
MAX_NAME_BYTES = 100
# A longer last part is not an extension ("report.final-version-2024-05" has none).
MAX_EXTENSION_BYTES = 16
# Attachment.filename's max_length.
MAX_DISPLAY_CHARS = 255
DEFAULT_STEM = "attachment"

# type "/" subtype (RFC 6838 names), as stored and used to guess an extension.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_SEPARATORS = re.compile(r"[/\\]")
# Django's storage keeps only these (django.utils.text.get_valid_filename) and raises when
# nothing is left: a stored name is made of them, so the storage keeps it as it is.
_UNSAFE = re.compile(r"[^-\w.]+")
_UNDERSCORES = re.compile(r"_{2,}")
_GUESSED_EXTENSION = re.compile(r"\.[a-z0-9]{1,10}")
# Device names Windows opens instead of a file, whatever the extension (CON.txt, nul.tar.gz);
# ¹²³ count as digits there too.
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{device}{digit}" for device in ("COM", "LPT") for digit in "0123456789¹²³"
}
# Invisible characters that reorder or hide what is shown ("invoice\u202efdp.exe" reads as
# "invoiceexe.pdf"): dropped from shown names.
_DECEPTIVE = dict.fromkeys(
    map(ord, "\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")
)
# Characters Windows refuses in a file name (a downloaded file must be saveable anywhere).
_WINDOWS_INVALID = re.compile(r'[<>:"|?*]')
_LINE_BREAKS = {"\t", "\n", "\v", "\f", "\r", "\x1c", "\x1d", "\x1e", "\x85"}


def _last_part(name: str) -> str:
    """The last directory part of `name` that is more than dots and spaces."""
    parts = [part for part in _SEPARATORS.split(name) if part.strip(". ")]
    return parts[-1] if parts else ""


def _truncate(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _clean_stem(stem: str) -> str:
    """Dot-separated parts without empty ones or "_" and "-" at their ends."""
    return ".".join(part for part in (p.strip("_-") for p in stem.split(".")) if part)


def _default_extension(content_type: str) -> str:
    content_type = safe_content_type(content_type)
    if content_type == "application/octet-stream":
        return ""
    guessed = mimetypes.guess_extension(content_type) or ""
    return guessed[1:] if _GUESSED_EXTENSION.fullmatch(guessed) else ""


def safe_content_type(value: str) -> str:
    """`value` as a plain lowercase "type/subtype", or application/octet-stream."""
    value = value.strip().lower()
    return value if _MEDIA_TYPE.fullmatch(value) else "application/octet-stream"


def storage_name(original: str, content_type: str = "") -> str:
    """A file name safe to store `original` under, on any file system and Django storage.

    One name (no / or \\, no ".."), only letters, digits, "_", "-" and single dots, no
    leading or trailing dot, not a Windows device name, at most MAX_NAME_BYTES of UTF-8 with
    the extension kept, never empty ("attachment", with an extension for `content_type`).
    Idempotent: a stored name comes back unchanged.
    """
    name = original.encode("utf-8", "replace").decode("utf-8")  # lone surrogates: "?"
    name = _last_part(unicodedata.normalize("NFC", name))
    name = _UNDERSCORES.sub("_", _UNSAFE.sub("_", name))
    parts = [part.strip("_-") for part in name.split(".")]
    extension = parts[-1] if len(parts) > 1 else ""
    if len(extension.encode("utf-8")) > MAX_EXTENSION_BYTES:
        extension = ""
    stem = _clean_stem(".".join(parts[:-1] if extension else parts))
    if not stem:
        stem = DEFAULT_STEM
        extension = extension or _default_extension(content_type)
    if stem.split(".")[0].upper() in _RESERVED:
        stem = f"_{stem}"  # "_CON.txt" is a plain file
    suffix = f".{extension}" if extension else ""
    budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    if len(stem.encode("utf-8")) > budget:
        cut = _truncate(stem, budget)
        device = "_" if cut.startswith("_") else ""  # the "_" that keeps CON.… a plain file
        stem = device + _clean_stem(cut) if _clean_stem(cut) else DEFAULT_STEM
    return stem + suffix


def display_name(original: str, content_type: str = "") -> str:
    """`original` as it may be shown and kept: line breaks and tabs become spaces, other
    control characters (NUL too), direction overrides and invisible characters go, spaces
    are collapsed, and it is cut to MAX_DISPLAY_CHARS keeping its extension. Never empty:
    a name with nothing left is shown as its `storage_name`. Idempotent."""
    kept = []
    for char in original:
        category = unicodedata.category(char)
        if char in _LINE_BREAKS or category in ("Zl", "Zp"):
            kept.append(" ")
        elif category == "Cs":
            kept.append("\ufffd")  # a lone surrogate: no column or page can hold it
        elif category != "Cc":
            kept.append(char)
    name = " ".join(unicodedata.normalize("NFC", "".join(kept).translate(_DECEPTIVE)).split())
    if len(name) > MAX_DISPLAY_CHARS:
        stem, dot, extension = name.rpartition(".")
        is_extension = dot and stem and len(extension.encode("utf-8")) <= MAX_EXTENSION_BYTES
        suffix = f".{extension}" if is_extension else ""
        name = name[: MAX_DISPLAY_CHARS - len(suffix)].rstrip() + suffix
    return name or storage_name(original, content_type)


def content_disposition(shown: str) -> str:
    """The Content-Disposition of an attachment download (RFC 6266): always "attachment";
    the shown name as filename* (RFC 8187: UTF-8, percent-encoded, so nothing in it can break
    the header), as one file name any system can save, and a plain ASCII filename for
    clients that read only that.
    """
    wanted = _WINDOWS_INVALID.sub("_", _last_part(display_name(shown))).strip(". ")
    if wanted.split(".")[0].strip().upper() in _RESERVED:
        wanted = f"_{wanted}"
    wanted = wanted or storage_name(shown)
    ascii_only = unicodedata.normalize("NFKD", wanted).encode("ascii", "ignore").decode()
    fallback = storage_name(ascii_only)
    header = f'attachment; filename="{fallback}"'
    if wanted != fallback:
        header += f"; filename*=UTF-8''{quote(wanted, safe='')}"
    return header
