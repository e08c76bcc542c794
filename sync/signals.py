"""What the sync engine tells the rest of the project."""

from django.dispatch import Signal

# Sent inside each batch's transaction once its new messages are stored and their replies
# logged, before the folder's checkpoint moves, with `mailbox`, `folder`, `new_messages`
# (how many) and `logged` (the Message-IDs of the replies logged). A receiver sees the batch
# as it will commit; one that raises undoes the whole batch, which the next sync reads
# again. Work for after the commit (telling open pages) belongs in transaction.on_commit.
batch_stored = Signal()
