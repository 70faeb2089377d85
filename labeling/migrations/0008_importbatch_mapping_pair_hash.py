"""The field mapping an import batch is read with, and content hashes of existing pairs recomputed on
texts compared as annotators see them (labeling.conversations.content_hash), so that re-importing the
same data saved with other line endings or spacing adds nothing.

Only pairs whose hash changes are written. A pair whose new hash another pair of its project already
has (two pairs that differ only in line ends or spaces) keeps its old hash: both stay, as before.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import migrations, models

CHUNK = 2000


def rehash(apps, schema_editor) -> None:
    from labeling.conversations import content_hash

    Pair = apps.get_model("labeling", "Pair")
    changed: dict[int, dict[str, int]] = defaultdict(dict)  # project -> new hash -> pair id
    rows = Pair.objects.order_by("id").values_list(
        "id", "project_id", "prompt", "response_a", "response_b", "content_hash"
    )
    for pk, project_id, prompt, response_a, response_b, old in rows.iterator(chunk_size=CHUNK):
        new = content_hash(prompt, response_a, response_b)
        if new != old:
            changed[project_id].setdefault(new, pk)  # the first pair with a hash keeps it
    for project_id, by_hash in changed.items():
        hashes = list(by_hash)
        for start in range(0, len(hashes), CHUNK):
            chunk = hashes[start : start + CHUNK]
            taken = set(
                Pair.objects.filter(project_id=project_id, content_hash__in=chunk).values_list(
                    "content_hash", flat=True
                )
            )
            pairs = [Pair(id=by_hash[h], content_hash=h) for h in chunk if h not in taken]
            Pair.objects.bulk_update(pairs, ["content_hash"], batch_size=500)


class Migration(migrations.Migration):
    dependencies = [("labeling", "0007_exportsnapshot")]

    operations = [
        migrations.AddField(
            model_name="importbatch",
            name="mapping",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Field mapping the file is read with: importer field -> the file's field "
                "(labeling.layouts.TARGETS); empty when its layout is recognised as it is.",
            ),
        ),
        migrations.RunPython(rehash, migrations.RunPython.noop, elidable=True),
    ]
