"""What labeling announces to other apps, which it does not import.

`queue_order_changed`: a lead saved a project's settings with another queue order
(`Project.queue_order`). Sent by the project settings page once the change is saved, with
`sender=Project` and `project=` the saved project (its `queue_order` already the new one). Receivers
rank the project's pairs for the new order with `labeling.assignment.set_queue_ranks`, or unrank them
with `clear_queue_ranks` (oldest first, or no judge to rank by). Until one does, the ranks stored for the
former order stay, and the claim serves fresh pairs by them in either judge order (an oldest-first
project ignores them). Receivers run in the request that saved the settings.
"""

from __future__ import annotations

from django.dispatch import Signal

queue_order_changed = Signal()
