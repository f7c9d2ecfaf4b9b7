"""Appeal attachments uploaded through the portal: checked, then stored under their SHA-256.

A file is accepted when its name ends in an allowed type and its first bytes are that type's
(a PDF starts with ``%PDF-``, a PNG with its signature...), it is not empty and not larger than
the limit. It is stored once as ``<folder>/<sha[:2]>/<sha>`` (the same content uploaded twice
is one file); the audit log's event keeps ``{name, sha256, bytes, type}``. Who may read it is
decided by the finding whose event names it (:mod:`medaudit.web.app`), never by the hash alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: extension -> (content type, accepted first bytes)
TYPES = {
    ".pdf": ("application/pdf", (b"%PDF-",)),
    ".jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    ".docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", (b"PK\x03\x04",)),
    ".xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", (b"PK\x03\x04",)),
    ".ofd": ("application/ofd", (b"PK\x03\x04",)),
}
MAX_BYTES = 10 * 1024 * 1024
MAX_FILES = 5
_SHA = re.compile(r"[0-9a-f]{64}")


class UploadError(ValueError):
    """A refused upload; the message names the file and why (for the clerk)."""


@dataclass
class Stored:
    name: str
    sha256: str
    bytes: int
    type: str

    def record(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.bytes, "type": self.type}


def clean_name(name: str) -> str:
    """The file's own name (no folder), control characters removed, at most 120 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[-120:]


def check(name: str, head: bytes, size: int, max_bytes: int = MAX_BYTES) -> str:
    """The content type of an acceptable file, else :class:`UploadError`."""
    ext = Path(name).suffix.lower()
    if ext not in TYPES:
        raise UploadError(f"附件 {name}：不支持的文件类型（可上传 {'、'.join(sorted(TYPES))}）")
    if size == 0:
        raise UploadError(f"附件 {name}：文件为空")
    if size > max_bytes:
        raise UploadError(f"附件 {name}：超过 {max_bytes // (1024 * 1024)} MB 的大小限制")
    ctype, magic = TYPES[ext]
    if not any(head.startswith(m) for m in magic):
        raise UploadError(f"附件 {name}：文件内容与扩展名 {ext} 不符")
    return ctype


def store(folder: Path, name: str, data: bytes, max_bytes: int = MAX_BYTES) -> Stored:
    name = clean_name(name)
    if not name:
        raise UploadError("附件：缺少文件名")
    ctype = check(name, data[:16], len(data), max_bytes)
    sha = hashlib.sha256(data).hexdigest()
    path = path_of(folder, sha)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".up.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # whole or not at all
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return Stored(name, sha, len(data), ctype)


def path_of(folder: Path, sha: str) -> Path:
    if not _SHA.fullmatch(sha or ""):
        raise UploadError("not a SHA-256")
    return Path(folder) / sha[:2] / sha
