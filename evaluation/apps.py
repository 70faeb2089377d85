from __future__ import annotations

from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Evaluation"

    def ready(self) -> None:
        from evaluation.queue_order import on_queue_order_changed
        from labeling.signals import queue_order_changed

        queue_order_changed.connect(on_queue_order_changed, dispatch_uid="evaluation-queue-order")
