from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        from prefstudio.roles import sync_role_groups

        # After auth's own receiver has created the permissions; flush (tests) re-runs it too.
        post_migrate.connect(sync_role_groups, sender=self, dispatch_uid="prefstudio-role-groups")
