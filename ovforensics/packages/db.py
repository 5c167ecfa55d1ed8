"""The one in-memory form every package-manager reader fills: packages, and who owns each path."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Package:
    manager: str  # "dpkg", "rpm", "apk"
    name: str
    version: str
    arch: str = ""
    state: str = "installed"  # dpkg: installed, config-files, half-installed, ...

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


@dataclass
class FileInfo:
    """What one package recorded about one path."""

    package: Package
    digest: str | None = None  # hex (lower case), None where the manager records none
    algorithm: str | None = None  # hashlib name: md5, sha1, sha256, ...
    conffile: bool = False
    link_target: bytes | None = None  # rpm records symlink targets
    kind: str | None = None  # "dir", "file", "symlink" where the manager says (rpm, apk)


@dataclass
class Database:
    """One package manager's database as one view of the stack shows it."""

    manager: str
    source: str  # the database's path inside the container
    packages: dict[str, Package] = field(default_factory=dict)  # by name (dpkg: name[:arch])
    files: dict[bytes, list[FileInfo]] = field(default_factory=dict)  # container path -> owners
    problems: list[str] = field(default_factory=list)  # damaged parts, what was not read
    complete: bool = True  # False: some of it could not be read (paths may lack owners)

    def own(self, path: bytes, info: FileInfo) -> None:
        owners = self.files.setdefault(path, [])
        if all(o.package is not info.package for o in owners):
            owners.append(info)
        else:  # the same package again (dpkg: .list then .md5sums): merge what is known
            for o in owners:
                if o.package is info.package:
                    o.digest = info.digest or o.digest
                    o.algorithm = info.algorithm or o.algorithm
                    o.conffile = o.conffile or info.conffile
                    o.link_target = info.link_target if info.link_target is not None else o.link_target
                    o.kind = info.kind or o.kind


def clean_path(raw: bytes, base: bytes = b"") -> tuple[bytes, ...] | None:
    """A database path as components below the container root, or None where it climbs
    (``..``), is empty or holds a NUL: such a path is reported, never followed."""
    if base:
        raw = base.rstrip(b"/") + b"/" + raw
    if b"\0" in raw:
        return None
    parts = tuple(p for p in raw.split(b"/") if p not in (b"", b"."))
    if any(p == b".." for p in parts):
        return None
    return parts


_HEX = frozenset("0123456789abcdef")


def valid_digest(text: str | None, algorithm: str | None) -> str | None:
    """``text`` lower-cased where it is hex of ``algorithm``'s length, else None."""
    import hashlib

    if not text or not algorithm:
        return None
    text = text.lower()
    try:
        size = hashlib.new(algorithm).digest_size * 2
    except ValueError:
        return None
    return text if len(text) == size and set(text) <= _HEX else None
