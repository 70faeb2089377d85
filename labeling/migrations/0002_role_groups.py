"""Create the annotator, lead and admin groups with their permissions."""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_PERMISSIONS = {
    "annotator": ["label_pairs"],
    "lead": ["label_pairs", "review_project", "export_data"],
    "admin": ["label_pairs", "review_project", "export_data", "manage_training"],
}
# Admins also manage projects, members and users in Django admin.
ADMIN_MODEL_PERMISSIONS = [
    ("labeling", "project"),
    ("labeling", "membership"),
    ("labeling", "importbatch"),
    ("labeling", "pair"),
    ("auth", "user"),
    ("auth", "group"),
]


def create_groups(apps, schema_editor):
    # Permissions are normally created after all migrations; make them exist now.
    for label in ("auth", "labeling"):
        config = apps.get_app_config(label)
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = list(Permission.objects.filter(content_type__app_label="labeling", codename__in=codenames))
        if name == "admin":
            for app_label, model in ADMIN_MODEL_PERMISSIONS:
                perms += Permission.objects.filter(
                    content_type__app_label=app_label, content_type__model=model
                )
        group.permissions.add(*perms)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUP_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
