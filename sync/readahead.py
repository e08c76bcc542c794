"""Reading a folder's batches in a child process while the sync writes the previous ones.

Fetching and parsing headers is CPU work, and so are the database writes and the matcher.
Threads would take turns on one core (the GIL); a forked child with its own connection to
the mail server runs on another, so a large initial sync costs about the slower of the two
instead of their sum. Small syncs (the usual incremental one) never fork.

The child dies with its parent: a sync killed mid-way (SIGKILL, the OOM killer, a worker
timeout) must not leave it reading on, or blocked for ever on the full queue, holding a
connection to the mail server and the parent's database sockets (issue 13).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from mailboxes.parsing import ParsedMessage, parse_message
from mailboxes.providers import get_provider
from mailboxes.providers.base import (
    Batch,
    MailProvider,
    MessageHeaders,
    ProviderConfig,
    ProviderError,
    ServerUnavailable,
)

if TYPE_CHECKING:  # the module loads without Django's app registry (a test runs it so)
    from engagements.matching import ReplyChains

# Batches waiting in the pipe: bounds memory when the writer is the slower side.
QUEUE_BATCHES = 2
POLL_SECONDS = 0.5

# What the child reads of a batch's likely replies: bounded, since a batch waiting in the
# pipe holds them. Messages of unknown size (Graph lists none) are left to the matcher.
AHEAD_MESSAGE_BYTES = 1024 * 1024
AHEAD_BATCH_BYTES = 8 * 1024 * 1024


def can_fork() -> bool:
    """A child process is possible: POSIX fork, and not inside a daemonic process (a django-q2
    worker is one unless Q_CLUSTER["daemonize_workers"] is False, as our settings make it)."""
    return (
        "fork" in multiprocessing.get_all_start_methods()
        and not multiprocessing.current_process().daemon
    )


# <linux/prctl.h>: the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1


def _kill_me_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies. (Strictly, when the
    parent's forking thread ends: a ReadAhead is used by the thread that made it.) SIGKILL,
    not SIGTERM: nothing here needs cleaning up, and an exiting Python could run finalizers
    on the database connections it shares with the parent."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _exit_when_parent_dies() -> None:
    """The child's first step: it never outlives the parent, wherever it is then (connecting,
    reading, preparing, or blocked on the full queue or in its feeder thread's final flush).

    Besides Linux's death signal, and in its stead elsewhere, a thread watches the pipe from
    the parent that multiprocessing gives every forked child (EOF once the parent is gone),
    and os.getppid(), and ends the process at once: os._exit, which waits for nothing.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return  # run in this process, not a child: nothing to outlive
    _kill_me_with_parent()
    if os.getppid() != parent.pid:
        os._exit(0)  # the parent died before the death signal was set

    def watch(parent: multiprocessing.process.BaseProcess) -> None:
        while parent.is_alive() and os.getppid() == parent.pid:
            parent.join(POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, args=(parent,), name="parent watch", daemon=True).start()


def _read(
    kind: str,
    config: ProviderConfig,
    folder: str,
    cursor: str,
    limit: int,
    since: date,
    prepare: Callable[[Batch, MailProvider, bool], Any] | None,
    out: multiprocessing.Queue,
) -> None:
    """The child: read batches from `cursor` until the folder is done, or the first error."""
    _exit_when_parent_dies()
    provider = get_provider(kind, config)
    try:
        with provider:
            while True:
                batch = provider.changes(folder, cursor, limit, since)
                # A reader busy with earlier batches gets this one prepared; a waiting one
                # should get it at once (see ReadAhead).
                busy = out.qsize() > 0
                prepared = prepare(batch, provider, busy) if prepare is not None else None
                updated = provider.updated_credentials()  # reading or preparing refreshed
                if updated:  # refreshed tokens: the parent saves them (this child has no ORM)
                    out.put(("credentials", updated))
                if prepared is not None:  # what the reader needs of the messages is in it
                    batch = dataclasses.replace(batch, messages=[])
                out.put(("batch", (batch, prepared)))
                if batch.done:
                    return
                cursor = batch.cursor
    except ProviderError as exc:
        out.put(("error", exc))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        out.put(("error", ServerUnavailable(f"Reading {folder} failed ({type(exc).__name__}).")))


class ReadAhead:
    """A folder's batches from `cursor` on, read by a child process that starts at once.

    Iterate to get (batch, prepared) pairs. `prepare(batch, provider, busy)` is the caller's
    own work on each batch, which the child does on the second core with its own connection
    (it must not touch the database). `busy` says whether the caller is still busy with
    earlier batches; when it is not, it is waiting, and prepare should do little and may
    give None. `prepared` is its result; unless it is None, the batch comes without its
    messages (sending 1,000s of them costs more than the rest). A child's
    ProviderError is raised here. Close it, by a `with` block, to stop the child, whether or
    not iteration started or finished.
    """

    def __init__(
        self,
        kind: str,
        config: ProviderConfig,
        folder: str,
        cursor: str,
        limit: int,
        since: date,
        on_credentials: Callable[[dict[str, Any]], None] | None = None,
        prepare: Callable[[Batch, MailProvider, bool], Any] | None = None,
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.folder = folder
        self.on_credentials = on_credentials
        self.out = context.Queue(maxsize=QUEUE_BATCHES)
        self.child = context.Process(
            target=_read,
            args=(kind, config, folder, cursor, limit, since, prepare, self.out),
            name=f"sync read-ahead {folder}",
            daemon=True,
        )
        self.child.start()

    def __iter__(self) -> Iterator[tuple[Batch, Any]]:
        while True:
            what, value = self._next()
            if what == "error":
                raise value
            if what == "credentials":
                if self.on_credentials:
                    self.on_credentials(value)
                continue
            yield value
            if value[0].done:
                return

    def _next(self) -> tuple[str, Any]:
        while True:
            try:
                return self.out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self.child.is_alive():
                    continue
            try:  # it may have put its last batch just before exiting
                return self.out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                raise ServerUnavailable(
                    f"Reading {self.folder} stopped unexpectedly; the next sync resumes it."
                ) from None

    def close(self) -> None:
        if self.child.is_alive():
            self.child.terminate()
        self.child.join()
        self.out.close()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_likely_replies(
    chains: ReplyChains, provider: MailProvider, folder: str, messages: Sequence[MessageHeaders]
) -> dict[str, tuple[bytes, ParsedMessage]]:
    """In the child: the likely replies among a batch's `messages` (those that answer
    another), read and parsed, by ref, so that they are ready when the batch is matched. The
    matcher still decides with the database: it reads any reply missed here (a thread
    tracked since), and leaves unused copies."""
    likely = chains.follow(messages)
    refs, total = [], 0
    for meta in messages:
        if meta.ref in likely and 0 < meta.size <= AHEAD_MESSAGE_BYTES:
            if total + meta.size > AHEAD_BATCH_BYTES:
                break
            refs.append(meta.ref)
            total += meta.size
    raws = provider.fetch_many(folder, refs) if refs else {}
    return {ref: (raw, parse_message(raw)) for ref, raw in raws.items()}
