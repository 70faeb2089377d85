from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save, pre_delete, pre_save


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        from django.contrib.auth.models import Group, User

        from labeling.access import membership_changed, membership_saving, project_changed, project_saving
        from labeling.models import Membership, Project
        from prefstudio.roles import group_changed, groups_changed, sync_role_groups

        # After auth's own receiver has created the permissions; flush (tests) re-runs it too.
        post_migrate.connect(sync_role_groups, sender=self, dispatch_uid="prefstudio-role-groups")
        # Cached roles (prefstudio.roles.roles_of) are dropped when groups change.
        m2m_changed.connect(groups_changed, sender=User.groups.through, dispatch_uid="prefstudio-roles-m2m")
        post_save.connect(group_changed, sender=Group, dispatch_uid="prefstudio-roles-group")
        pre_delete.connect(group_changed, sender=Group, dispatch_uid="prefstudio-roles-group-delete")
        # Cached access to projects (labeling.access.project_for) is dropped when either side changes.
        pre_save.connect(project_saving, sender=Project, dispatch_uid="prefstudio-access-project-slug")
        post_save.connect(project_changed, sender=Project, dispatch_uid="prefstudio-access-project")
        pre_delete.connect(project_changed, sender=Project, dispatch_uid="prefstudio-access-project-delete")
        pre_save.connect(membership_saving, sender=Membership, dispatch_uid="prefstudio-access-member-before")
        post_save.connect(membership_changed, sender=Membership, dispatch_uid="prefstudio-access-member")
        post_delete.connect(membership_changed, sender=Membership, dispatch_uid="prefstudio-access-gone")
