"""Reading a PostgreSQL server's state without connecting to it: the status word of its
``postmaster.pid``, the errors of its log, and those its restore_command wrote.

Connecting to a server that is starting makes it log a FATAL ("the database system is
starting up") for every attempt; these readers never do, so the log keeps only the startup
process's own errors, and a failed recovery can be reported with PostgreSQL's reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from paas_pitr.cnpg.diagnosis import TRANSIENT_SERVER_STATES, diagnose_recovery

# postmaster.pid: line 1 is the postmaster's PID, line 8 its status word, padded to 8
# characters: "starting", "stopping", "ready" or "standby". PostgreSQL 15 restoring with
# hot_standby on (our case) goes starting -> ready (consistent, read-only) and stays ready
# once promoted; with it off, starting -> standby -> ready after promotion.
_PM_STATUS_LINE = 8
PM_READY = "ready"
PM_STARTING = "starting"
PM_STOPPING = "stopping"

# "%m [%p] " (log_line_prefix) then "LEVEL:  message"; the prefix is optional so lines
# written before the configuration is read still parse.
_LOG_ENTRY = re.compile(
    r"^(?:.*?\[(?P<pid>\d+)\]\s+)?"
    r"(?P<level>DEBUG\d|LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|CONTEXT|STATEMENT):"
    r"\s+(?P<message>.*)$"
)
# The postmaster names the startup process when it fails (an exit code 0 is never logged).
_STARTUP_EXIT = re.compile(
    r"^startup process \(PID (?P<pid>\d+)\) (?:exited with exit code|was terminated by)"
)
# Startup failures that mean the archive ran out of WAL: the restore_command's own error
# then says which segment and why.
WAL_SHORTAGE_MESSAGES = (
    "recovery ended before configured recovery target was reached",
    "could not locate required checkpoint record",
    "could not locate a valid checkpoint record",
    "wal ends before end of online backup",
    "wal ends before consistent recovery point",
)
# barman-cloud's "2026-01-01 00:00:00,000 [123] " in front of each of its lines.
_BARMAN_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \[\d+\] ")
_SEGMENT_NAME = re.compile(r"\b([0-9A-F]{24})\b")


def postmaster_status_of(pid_file_text: str) -> str:
    """The status word of a postmaster.pid's text; ``"starting"`` until the postmaster has
    written one (it writes its PID first and the status last)."""
    lines = pid_file_text.split("\n")
    if len(lines) >= _PM_STATUS_LINE and lines[_PM_STATUS_LINE - 1].strip():
        return lines[_PM_STATUS_LINE - 1].strip()
    return PM_STARTING


def is_transient(message: str) -> bool:
    """A state PostgreSQL passes through while it starts or stops, never a failure."""
    text = message.strip().rstrip(".").lower()
    return any(text.startswith(state) for state in TRANSIENT_SERVER_STATES)


@dataclass(frozen=True, slots=True)
class _LogError:
    pid: str | None
    level: str
    message: str
    detail: str | None = None

    @property
    def text(self) -> str:
        return f"{self.message} ({self.detail})" if self.detail else self.message


def startup_failure(log_text: str) -> str | None:
    """Why PostgreSQL's startup process (recovery) failed, from a server log's text.

    FATAL and PANIC lines of transient states (what clients are told while the server
    starts or stops) are skipped. When the postmaster named the startup process that
    failed, only that process's errors count (a client's own FATAL is not the reason);
    among them a known recovery failure wins, else the last. With no such error, the
    postmaster's own line about the startup process's end, if any. ``None``: nothing
    failed in this text. A DETAIL line is appended in parentheses.
    """
    errors: list[_LogError] = []
    startup_pids: set[str] = set()
    startup_exit: str | None = None
    # A DETAIL belongs to the entry just before it, from the same process.
    last_was_error = False
    for line in log_text.splitlines():
        match = _LOG_ENTRY.match(line)
        if match is None:
            continue
        pid, level, message = match.group("pid"), match.group("level"), match.group("message")
        message = message.strip()
        if level == "DETAIL":
            if last_was_error and errors[-1].pid == pid and errors[-1].detail is None:
                errors[-1] = _LogError(pid, errors[-1].level, errors[-1].message, message)
            continue
        last_was_error = False
        if level in ("FATAL", "PANIC"):
            if not is_transient(message):
                errors.append(_LogError(pid, level, message))
                last_was_error = True
        elif level == "LOG" and (exited := _STARTUP_EXIT.match(message)):
            startup_pids.add(exited.group("pid"))
            startup_exit = message
    candidates = [e for e in errors if e.pid in startup_pids] or errors
    if not candidates:
        return startup_exit
    known = [e for e in candidates if diagnose_recovery(e.message) is not None]
    return (known[0] if known else candidates[-1]).text


def is_wal_shortage(reason: str) -> bool:
    """Whether a startup failure means recovery could not get the WAL it needed."""
    text = reason.lower()
    return any(text.startswith(message) for message in WAL_SHORTAGE_MESSAGES)


def missing_segment(restore_error: str) -> str | None:
    """The WAL segment (24 hex digits) a restore_command error names, if any."""
    match = _SEGMENT_NAME.search(restore_error)
    return match.group(1) if match else None


def barman_errors(text: str) -> str | None:
    """barman-cloud's last three distinct error lines, without their time and PID prefix,
    joined by " | " (``None`` for none)."""
    lines: list[str] = []
    for line in text.splitlines():
        cleaned = _BARMAN_PREFIX.sub("", line).strip()
        if cleaned and cleaned not in lines:
            lines.append(cleaned)
    return " | ".join(lines[-3:]) or None
