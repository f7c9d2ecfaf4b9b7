"""How much of the machine a medaudit process may use: its memory budget and DuckDB's spill folder.

DuckDB's own default memory limit is 80% of the machine's memory: a 10-million-line screen then
grows to 18 GB on a 24 GB machine shared with other work. medaudit gives every process a
**memory budget** (by default a quarter of the machine's memory: 5.9 GiB on 23.5 GiB) and sets
DuckDB's limit on every connection it opens (:func:`medaudit.db.connect`) to four fifths of it
(:data:`DUCKDB_SHARE`: 4.7 GiB here), with a folder where DuckDB writes what does not fit (it
spills instead of failing). The fifth left over is for what the process holds beyond DuckDB's own
count: measured at 52.4M lines with DuckDB's limit at 7.45 GiB (``8GB``), the process peaked 1.1
to 1.2 GiB above it while loading and 0.75 GiB above it while screening (2026-12-02/03), so a
budget of ``8GB`` given whole to DuckDB ended at 9.1 GB. On 10.5M lines with the full library
(2026-12-03, a machine whose speed varied by about 20%): DuckDB at 5.9 GiB screened in 37.5 to
50.9 s at a peak of 6.1 GiB, at 4.7 GiB (today's default) in 35.5 to 52.0 s at 4.9 GiB.

Where the values come from, first found wins:

1. the command line: ``medaudit --memory-limit 4GB --temp-dir /scratch/spill screen ...``
   (options of the ``medaudit`` command itself, so they hold for every sub-command);
2. a config file: ``--config FILE``, else ``medaudit.toml`` in the working folder, if there::

       [duckdb]
       memory_limit = "6GB"        # the process's budget, any DuckDB size: 6GB, 6000MB, 5.5GiB
       temp_dir = "/scratch/medaudit-spill"

3. the defaults: a quarter of the machine's memory (at least 1 GiB); the spill folder next to
   the database file (``<db>.tmp``, DuckDB's own choice), or for an in-memory database a
   ``medaudit-spill`` folder in the system's temporary folder.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import duckdb

CONFIG_FILE = "medaudit.toml"
CONFIG_KEYS = ("memory_limit", "temp_dir")

# what DuckDB accepts for a size (it checks again; this only keeps the message ours)
_SIZE = re.compile(
    r"^\s*\d+(\.\d+)?\s*(B|bytes?|KB|MB|GB|TB|KiB|MiB|GiB|TiB|kilobytes?|megabytes?|gigabytes?|terabytes?)\s*$",
    re.IGNORECASE,
)


class ResourceError(ValueError):
    """A memory limit or spill folder that cannot be used; the message names where it came from."""


@dataclass(frozen=True)
class Resources:
    memory_limit: str | None = None  # None: the default
    temp_dir: str | None = None
    source: str = "default"  # where the values were given, for messages

    @property
    def effective_memory_limit(self) -> str:
        """The process's memory budget: as given, or the default (:func:`default_memory_limit`)."""
        return self.memory_limit or default_memory_limit()

    @property
    def duckdb_memory_limit(self) -> str:
        """DuckDB's limit on every connection: :data:`DUCKDB_SHARE` of the budget, in MiB."""
        return duckdb_share(self.effective_memory_limit)


#: DuckDB's part of a process's memory budget; the rest is what the process holds beyond DuckDB's
#: own count (1.1 to 1.2 GiB over a 7.45 GiB limit while loading 52.4M lines: see the module's doc)
DUCKDB_SHARE = 0.8


def default_memory_limit() -> str:
    """A quarter of the machine's physical memory, at least 1 GiB, as a size (MiB): the process's
    budget, of which DuckDB gets four fifths (a fifth of the machine)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not available (e.g. Windows): DuckDB's 80% is too much too
        total = 16 * 2**30
    return f"{max(total // 4, 2**30) // 2**20}MiB"


_UNIT = {"b": 1, "byte": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNIT.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
_UNIT.update({"kilobyte": 10**3, "megabyte": 10**6, "gigabyte": 10**9, "terabyte": 10**12})


def size_bytes(text: str) -> int:
    """Bytes in a size as :func:`check_memory_limit` takes it and as DuckDB shows one (``5.9 GiB``),
    read as DuckDB reads it (KB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ResourceError(f"not a size: {text!r}")
    unit = m.group(2).lower()
    return int(float(text[: m.start(2)].strip()) * _UNIT[unit.removesuffix("s")])  # "gigabytes": "gigabyte"


def memory_limit_bytes(con) -> int:
    """The DuckDB connection's memory limit in bytes (as DuckDB shows it: ``5.9 GiB``)."""
    return size_bytes(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])


def duckdb_share(budget: str) -> str:
    """DuckDB's limit for a process budget: :data:`DUCKDB_SHARE` of it, in MiB (at least 64 MiB)."""
    return f"{max(int(size_bytes(budget) * DUCKDB_SHARE) // 2**20, 64)}MiB"


def check_memory_limit(value: str, where: str) -> str:
    if not isinstance(value, str) or not _SIZE.match(value):
        raise ResourceError(f"{where}: memory limit must be a size such as 6GB, 6000MB or 5.5GiB, got {value!r}")
    return value.strip()


def read_config(path: Path, required: bool) -> Resources:
    """The ``[duckdb]`` table of a TOML config file (nothing when the file is absent and not required)."""
    if not path.exists():
        if required:
            raise ResourceError(f"{path}: no such config file")
        return Resources()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ResourceError(f"{path}: not a valid TOML config file: {e}") from None
    section = doc.get("duckdb", {})
    if not isinstance(section, dict):
        raise ResourceError(f"{path}: [duckdb] must be a table")
    unknown = sorted(set(section) - set(CONFIG_KEYS))
    if unknown:
        raise ResourceError(f"{path}: [duckdb] {unknown[0]}: unknown setting (known: {', '.join(CONFIG_KEYS)})")
    mem, tmp = section.get("memory_limit"), section.get("temp_dir")
    if mem is not None:
        mem = check_memory_limit(mem, f"{path}: [duckdb] memory_limit")
    if tmp is not None and (not isinstance(tmp, str) or not tmp.strip()):
        raise ResourceError(f"{path}: [duckdb] temp_dir must be a folder path, got {tmp!r}")
    return Resources(mem, tmp, str(path))


_current = Resources()


def configure(
    memory_limit: str | None = None, temp_dir: str | Path | None = None, config: Path | None = None
) -> Resources:
    """Set what every later :func:`medaudit.db.connect` applies: command-line values over the
    config file (``config``, else ``medaudit.toml`` in the working folder) over the defaults."""
    global _current
    from_file = read_config(config if config is not None else Path(CONFIG_FILE), required=config is not None)
    if memory_limit is not None:
        memory_limit = check_memory_limit(memory_limit, "--memory-limit")
    _current = Resources(
        memory_limit if memory_limit is not None else from_file.memory_limit,
        str(temp_dir) if temp_dir is not None else from_file.temp_dir,
        "the command line" if memory_limit is not None or temp_dir is not None else from_file.source,
    )
    return _current


def current() -> Resources:
    return _current


def spill_dir(db_path: str, res: Resources | None = None) -> str:
    res = res or _current
    if res.temp_dir:
        return res.temp_dir
    if db_path in ("", ":memory:") or db_path.startswith(":memory:"):
        return str(Path(tempfile.gettempdir()) / "medaudit-spill")
    return f"{db_path}.tmp"


def apply(con: duckdb.DuckDBPyConnection, db_path: str, res: Resources | None = None) -> None:
    """Set DuckDB's memory limit (its share of the budget) and the spill folder on a new
    connection (they hold for its database)."""
    res = res or _current
    try:
        con.execute("SET memory_limit = ?", [res.duckdb_memory_limit])
    except duckdb.Error as e:
        raise ResourceError(
            f"memory limit {res.duckdb_memory_limit!r} (four fifths of {res.effective_memory_limit!r}, "
            f"from {res.source}): {e}"
        ) from None
    spill = spill_dir(db_path, res)
    try:
        # a database already open in this process (a second connection) keeps its folder: DuckDB
        # refuses to switch it once something was spilled there
        if con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0] != spill:
            con.execute("SET temp_directory = ?", [spill])
    except duckdb.Error as e:
        raise ResourceError(f"spill folder {spill!r} (from {res.source}): {e}") from None
