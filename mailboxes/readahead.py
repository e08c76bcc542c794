"""Reading a folder's batches in a child process while the sync writes the previous ones.

Fetching and parsing headers is CPU work, and so are the database writes and the matcher.
Threads would take turns on one core (the GIL); a forked child with its own connection to
the mail server runs on another, so a large initial sync costs about the slower of the two
instead of their sum. Small syncs (the usual incremental one) never fork.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

from .providers import get_provider
from .providers.base import Batch, ProviderConfig, ProviderError, ServerUnavailable

# Batches waiting in the pipe: bounds memory when the writer is the slower side.
QUEUE_BATCHES = 2
POLL_SECONDS = 0.5


def can_fork() -> bool:
    """A child process is possible: POSIX fork, and not inside a daemonic process (a django-q2
    worker is one unless Q_CLUSTER["daemonize_workers"] is False, as our settings make it)."""
    return (
        "fork" in multiprocessing.get_all_start_methods()
        and not multiprocessing.current_process().daemon
    )


def _read(
    kind: str,
    config: ProviderConfig,
    folder: str,
    cursor: str,
    limit: int,
    since: date,
    out: multiprocessing.Queue,
) -> None:
    """The child: read batches from `cursor` until the folder is done, or the first error."""
    provider = get_provider(kind, config)
    try:
        with provider:
            while True:
                batch = provider.changes(folder, cursor, limit, since)
                updated = provider.updated_credentials()
                if updated:  # refreshed tokens: the parent saves them (this child has no ORM)
                    out.put(("credentials", updated))
                out.put(("batch", batch))
                if batch.done:
                    return
                cursor = batch.cursor
    except ProviderError as exc:
        out.put(("error", exc))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        out.put(("error", ServerUnavailable(f"Reading {folder} failed ({type(exc).__name__}).")))


def read_batches(
    kind: str,
    config: ProviderConfig,
    folder: str,
    cursor: str,
    limit: int,
    since: date,
    on_credentials: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Batch]:
    """The folder's batches from `cursor` on, read ahead by a child process.

    Raises the child's ProviderError; stopping the iteration early (the caller failed or
    was interrupted) stops the child.
    """
    context = multiprocessing.get_context("fork")
    out = context.Queue(maxsize=QUEUE_BATCHES)
    child = context.Process(
        target=_read,
        args=(kind, config, folder, cursor, limit, since, out),
        name=f"sync read-ahead {folder}",
        daemon=True,
    )
    child.start()
    try:
        while True:
            try:
                what, value = out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if child.is_alive():
                    continue
                try:  # it may have put its last batch just before exiting
                    what, value = out.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    raise ServerUnavailable(
                        f"Reading {folder} stopped unexpectedly; the next sync resumes it."
                    ) from None
            if what == "error":
                raise value
            if what == "credentials":
                if on_credentials:
                    on_credentials(value)
                continue
            yield value
            if value.done:
                return
    finally:
        if child.is_alive():
            child.terminate()
        child.join()
        out.close()
