"""What the sync engine tells the rest of the project."""

from django.dispatch import Signal

# Sent inside the transaction of each batch that brought new messages, once they are stored
# and their replies logged, before the folder's checkpoint moves, with `mailbox`, `folder`,
# `new_messages` (how many) and `logged` (the Message-IDs of the replies logged). A receiver
# sees the batch as it will commit; one that raises undoes the whole batch and fails the sync
# (recorded on the mailbox), and the next sync reads the batch again. Work for after the
# commit belongs in transaction.on_commit. Replies logged outside a sync's batches (a
# quarantined message's retry, a backlog replay) do not send it.
batch_stored = Signal()
