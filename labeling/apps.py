from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_migrate, post_save, pre_delete


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        from django.contrib.auth.models import Group, User

        from prefstudio.roles import group_changed, groups_changed, sync_role_groups

        # After auth's own receiver has created the permissions; flush (tests) re-runs it too.
        post_migrate.connect(sync_role_groups, sender=self, dispatch_uid="prefstudio-role-groups")
        # Cached roles (prefstudio.roles.roles_of) are dropped when groups change.
        m2m_changed.connect(groups_changed, sender=User.groups.through, dispatch_uid="prefstudio-roles-m2m")
        post_save.connect(group_changed, sender=Group, dispatch_uid="prefstudio-roles-group")
        pre_delete.connect(group_changed, sender=Group, dispatch_uid="prefstudio-roles-group-delete")
