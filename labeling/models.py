"""Labeling data: projects, who works on them, the pairs they judge, and where the pairs came from."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse


class Choice(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    rubric = models.TextField(blank=True, help_text="Markdown shown to annotators beside every pair.")
    criteria = models.JSONField(
        default=list,
        blank=True,
        help_text='Optional per-criterion questions: [{"name": "Helpfulness", "question": "..."}].',
    )
    allow_tie = models.BooleanField(default=True)
    allow_both_bad = models.BooleanField(default=True)
    use_strength = models.BooleanField(default=False, help_text="Ask how much better: slightly or clearly.")
    require_strength = models.BooleanField(
        default=False,
        verbose_name="Strength required",
        help_text="With “use strength” on, an A or B choice must say how much better.",
    )
    overlap = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(25)],
        help_text="Distinct annotators wanted per pair.",
    )
    lease_minutes = models.PositiveSmallIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(24 * 60)]
    )
    gold_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of assignments drawn from gold pairs (0 to 0.5).",
    )

    class QueueOrder(models.TextChoices):
        OLDEST = "oldest", "Oldest pairs first"
        JUDGE_UNCERTAIN = "judge-uncertain", "Where the AI judge is least sure first"
        JUDGE_INCONSISTENT = "judge-inconsistent", "Where the AI judge contradicts itself first"

    queue_order = models.CharField(
        max_length=24,
        choices=QueueOrder.choices,
        default=QueueOrder.OLDEST,
        help_text="Which new pairs annotators get first. The AI judge orders put first the pairs a judge "
        "is least sure of (its probability, averaged over both sides, nearest one half) or contradicts "
        "itself on when the responses swap sides; pairs it has not judged count as least sure. Pairs sent "
        "back or partly judged still come first, and overlap k holds in every order.",
    )
    # Written by labeling.assignment.set_queue_ranks: blank while no pair is ranked.
    queue_ranked_by = models.CharField(
        max_length=255,
        blank=True,
        editable=False,
        help_text="Which judge ranked the pairs for the queue, and when.",
    )
    archived = models.BooleanField(default=False)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("label_pairs", "Can judge pairs"),
            ("review_project", "Can review agreement and adjudicate"),
            ("export_data", "Can export preference data"),
            ("manage_training", "Can launch and cancel training runs"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(overlap__gte=1), name="project_overlap_positive"),
            models.CheckConstraint(
                condition=models.Q(gold_rate__gte=0) & models.Q(gold_rate__lte=0.5),
                name="project_gold_rate_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("labeling:project-detail", kwargs={"slug": self.slug})

    @property
    def choices(self) -> list[tuple[str, str]]:
        """The overall choices annotators may pick in this project."""
        allowed = [Choice.A, Choice.B]
        if self.allow_tie:
            allowed.append(Choice.TIE)
        if self.allow_both_bad:
            allowed.append(Choice.BOTH_BAD)
        return [(c.value, c.label) for c in allowed]


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator", "Annotator"
        LEAD = "lead", "Lead"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    active = models.BooleanField(
        default=True, help_text="Inactive members keep their history but get no work."
    )
    excluded = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Their judgments stay stored but leave agreement headlines, consensus and export.",
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")]
        ordering = ["project", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class Invitation(models.Model):
    """A link that lets people create an account and join a project with a role. The link carries the
    uuid signed with the SECRET_KEY (labeling.invitations), so the table alone cannot make one."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations")
    role = models.CharField(max_length=16, choices=Membership.Role.choices, default=Membership.Role.ANNOTATOR)
    max_uses = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Accounts it may make.",
    )
    uses = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(uses__lte=models.F("max_uses")), name="invitation_uses_limit"
            )
        ]

    def __str__(self) -> str:
        return f"invitation to {self.project} as {self.role}"


def _upload_path(batch: ImportBatch, filename: str) -> str:
    # Server-chosen name: the client's file name is kept for display only, never used on disk.
    return f"imports/{batch.project_id}/{batch.uuid}.upload"


class ImportBatch(models.Model):
    class State(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded, waiting for confirmation"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Importing"
        DONE = "done", "Imported"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="batches")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    source_name = models.CharField(max_length=255, help_text="The file name as uploaded (display only).")
    file = models.FileField(upload_to=_upload_path, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    format = models.CharField(max_length=16, blank=True)
    skip_invalid = models.BooleanField(default=False)
    evaluation = models.BooleanField(
        default=False,
        help_text="Pairs of a blind evaluation round (model vs model): never in a training export.",
    )
    mapping = models.JSONField(
        default=dict,
        blank=True,
        help_text="Field mapping the file is read with: importer field -> the file's field "
        "(labeling.layouts.TARGETS); empty when its layout is recognised as it is.",
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.UPLOADED)
    job_id = models.CharField(max_length=64, blank=True)
    records = models.PositiveIntegerField(default=0, help_text="Records read, good and bad.")
    imported = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="The first problems found, as text.")
    error_count = models.PositiveIntegerField(default=0)
    report = models.FileField(blank=True, help_text="Rejected records with their reasons (JSONL).")
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the import was claimed (queued or started)."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "import batches"

    def __str__(self) -> str:
        return f"{self.source_name} into {self.project}"

    def get_absolute_url(self) -> str:
        return reverse("labeling:batch-detail", kwargs={"slug": self.project.slug, "batch": self.uuid})

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)


class Pair(models.Model):
    # Foreign keys without their own index where a composite index starts with them (fewer index
    # writes on the workbench's hot path): here pair_unique_content_per_project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pairs", db_index=False)
    batch = models.ForeignKey(ImportBatch, on_delete=models.CASCADE, related_name="pairs")
    external_id = models.CharField(max_length=255, blank=True)
    prompt = models.JSONField(help_text="A string, or a list of chat messages {role, content}.")
    response_a = models.TextField()
    response_b = models.TextField()
    model_a = models.CharField(max_length=255, blank=True)
    model_b = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    gold = models.CharField(max_length=8, choices=Choice.choices, blank=True)
    original_label = models.CharField(
        max_length=1,
        blank=True,
        help_text="The dataset's own preference, hidden from annotators and audited on Review: a, b, or t "
        "(a tie); from a chosen/rejected layout, or a mapped label or pair of scores.",
    )
    shape = models.CharField(max_length=16)
    content_hash = models.CharField(max_length=64)
    # Live claims on this pair: done judgments plus unexpired leases. Kept on the row so that the
    # claim query's `taken < overlap` is re-checked against the newest row version under
    # concurrency (PostgreSQL re-evaluates a locked row's own columns, not subqueries).
    taken = models.PositiveSmallIntegerField(default=0)
    # Judgments wanted beyond the project's k: a lead sent the pair back for more votes. Claims offer
    # such pairs first (index pair_sent_back).
    extra_wanted = models.PositiveSmallIntegerField(default=0, db_default=0)
    # Where the pair stands in the queue of fresh pairs when the project orders it by an AI judge
    # (Project.queue_order): smaller first, then oldest. 0 is unranked: the judge has not judged it, so
    # it counts as least sure and comes first (index pair_fresh_rank; labeling.assignment.set_queue_ranks).
    queue_rank = models.PositiveIntegerField(default=0, db_default=0, editable=False)
    # The texts as sanitized HTML, rendered when the pair is first shown and kept: with overlap k
    # every pair is shown k times (labeling/display.py).
    rendered = models.JSONField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="pair_unique_content_per_project"
            ),
            models.CheckConstraint(
                condition=~models.Q(response_a=models.F("response_b")), name="pair_distinct"
            ),
        ]
        indexes = [
            models.Index(fields=["project", "external_id"]),
            models.Index(fields=["project", "gold", "-taken", "id"], name="pair_claim_order"),
            models.Index(
                fields=["project", "id"], condition=models.Q(extra_wanted__gt=0), name="pair_sent_back"
            ),
            # Fresh regular pairs in the order a judge ranked them: the claim walks it without sorting.
            # Partial, so a pair leaves it with its first claim.
            models.Index(
                fields=["project", "queue_rank", "id"],
                condition=models.Q(gold="", taken=0),
                name="pair_fresh_rank",
            ),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return self.external_id or f"pair {self.pk}"

    @property
    def is_chat(self) -> bool:
        return isinstance(self.prompt, list)


class Assignment(models.Model):
    """A pair handed to one annotator: a lease until judged, skipped, or expired."""

    class State(models.TextChoices):
        LEASED = "leased", "Leased"
        DONE = "done", "Judged"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Lease expired"

    class SkipReason(models.TextChoices):
        CANT_JUDGE = "cant_judge", "I can't judge this"
        OFFENSIVE = "offensive", "Offensive content"
        BROKEN = "broken", "Broken or empty"

    # Indexed by assignment_user_state and assignment_once_per_annotator, which start with them.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments", db_index=False)
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="assignments", db_index=False)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.LEASED)
    a_on_left = models.BooleanField(default=True, help_text="Was response A shown on the left?")
    is_gold = models.BooleanField(default=False)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=16, choices=SkipReason.choices, blank=True)

    class Meta:
        constraints = [
            # One pair is never handed to the same annotator twice, skipped or not.
            models.UniqueConstraint(fields=["pair", "annotator"], name="assignment_once_per_annotator"),
        ]
        indexes = [
            models.Index(fields=["project", "annotator", "state"], name="assignment_user_state"),
            models.Index(fields=["project", "state", "expires_at"], name="assignment_expiry"),
            # Live leases only (at most one per annotator): the workbench looks one up on every request.
            models.Index(
                fields=["project", "annotator"],
                condition=models.Q(state="leased"),
                name="assignment_live_lease",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pair} to {self.annotator} ({self.state})"


class Judgment(models.Model):
    class Strength(models.TextChoices):
        SLIGHTLY = "slightly", "Slightly"
        CLEARLY = "clearly", "Clearly"

    # Indexed by judgment_one_per_annotator and judgment_recent, which start with them.
    pair = models.ForeignKey(Pair, on_delete=models.PROTECT, related_name="judgments", db_index=False)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments", db_index=False
    )
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="judgment"
    )
    choice = models.CharField(max_length=8, choices=Choice.choices)
    strength = models.CharField(max_length=8, choices=Strength.choices, blank=True)
    criteria = models.JSONField(default=dict, blank=True, help_text="Criterion name -> a / b / tie.")
    rationale = models.TextField(blank=True)
    a_on_left = models.BooleanField(default=True, help_text="Was response A shown on the left?")
    is_gold = models.BooleanField(default=False)
    seconds_spent = models.FloatField(
        null=True, blank=True, help_text="Lease start to submit (server clock)."
    )
    active_seconds = models.FloatField(null=True, blank=True, help_text="Time the page was in use (browser).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pair", "annotator"], name="judgment_one_per_annotator")
        ]
        indexes = [models.Index(fields=["annotator", "-created_at"], name="judgment_recent")]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.pair}: {self.choice}"


class Tally(models.Model):
    """An annotator's finished work in a project, counted as it happens: the statements that mark an
    assignment done or skipped add to it (labeling/tally.py), so the workbench reads its progress from
    one row instead of counting the annotator's whole history on every request."""

    # Indexed by tally_one_per_annotator, which starts with it.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tallies", db_index=False)
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tallies")
    judged = models.PositiveIntegerField(default=0, help_text="Assignments done.")
    skipped = models.PositiveIntegerField(default=0, help_text="Assignments skipped.")
    day = models.DateField(help_text="The local date `judged_on_day` counts.")
    judged_on_day = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "annotator"], name="tally_one_per_annotator")
        ]

    def __str__(self) -> str:
        return f"{self.annotator} in {self.project}: {self.judged} judged, {self.skipped} skipped"


class Adjudication(models.Model):
    """A lead's final label for a pair, with why: it overrides the votes at export."""

    pair = models.OneToOneField(Pair, on_delete=models.CASCADE, related_name="adjudication")
    label = models.CharField(max_length=8, choices=Choice.choices)
    note = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.pair}: {self.get_label_display()} (adjudicated)"


class ExportSnapshot(models.Model):
    """One export of a project's consistent pairs: the rules, what they kept and dropped, and the files
    written. Never rewritten once done, so a training run that names it traces back to its judgments."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Exporting"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Shape(models.TextChoices):
        STANDARD = "standard", "Standard (prompt, chosen, rejected as text)"
        CONVERSATIONAL = "conversational", "Conversational (chat messages)"
        UNPAIRED = "unpaired", "Unpaired for KTO (prompt, completion, label)"
        UNPAIRED_CONVERSATIONAL = "unpaired-conversational", "Unpaired for KTO, as chat messages"
        OPENAI_PREFERENCE = "openai-preference", "Hosted preference fine-tuning (OpenAI, Together, Fireworks)"

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON Lines"
        PARQUET = "parquet", "Parquet"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="exports")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    job_id = models.CharField(max_length=64, blank=True)
    message = models.TextField(blank=True, help_text="Why it failed, in words.")
    rules = models.JSONField(help_text="The consensus rules used (labeling.consensus.ConsensusRules).")
    shape = models.CharField(max_length=24, choices=Shape.choices)
    format = models.CharField(max_length=8, choices=Format.choices)
    eval_fraction = models.FloatField(
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)], help_text="Share of pairs held out."
    )
    include_metadata = models.BooleanField(
        default=True, help_text="Rows carry each pair's imported metadata in meta (not in the hosted shape)."
    )
    min_share_text = models.CharField(
        max_length=32, blank=True, help_text="The minimum share as the user wrote it (2/3, 0.667)."
    )
    pairs_total = models.PositiveIntegerField(default=0, help_text="Pairs in the project when it started.")
    pairs_done = models.PositiveIntegerField(default=0, help_text="Pairs looked at so far (progress).")
    kept = models.PositiveIntegerField(default=0)
    dropped = models.JSONField(default=dict, blank=True, help_text="Dropped pairs by reason code.")
    train_rows = models.PositiveIntegerField(default=0)
    eval_rows = models.PositiveIntegerField(default=0)
    files = models.JSONField(default=list, blank=True, help_text="[{name, split, rows, bytes, sha256}]")
    judgments = models.PositiveIntegerField(
        default=0, help_text="Judgments counted (excluded annotators' not)."
    )
    last_judgment_at = models.DateTimeField(null=True, blank=True, help_text="The newest judgment counted.")
    excluded_annotators = models.JSONField(default=list, blank=True, help_text="User ids left out.")
    disagreement = models.FloatField(null=True, blank=True, help_text="Share of kept pairs not unanimous.")
    label_noise = models.FloatField(null=True, blank=True, help_text="Dawid–Skene estimate of label noise.")
    suggested_label_smoothing = models.FloatField(null=True, blank=True)
    judge_fill = models.JSONField(
        null=True, blank=True,
        help_text="The AI judge let fill unsettled pairs (labeling.snapshots.JudgeFill); none: people only.",
    )  # fmt: skip
    judge_rows = models.PositiveIntegerField(default=0, help_text="Kept pairs the AI judge labelled.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.project} export {self.created_at:%Y-%m-%d %H:%M} ({self.shape}, {self.format})"

    def get_absolute_url(self) -> str:
        return reverse("labeling:export-detail", kwargs={"slug": self.project.slug, "export": self.uuid})

    @property
    def directory(self) -> str:
        """Where its files live, relative to MEDIA_ROOT."""
        return f"exports/{self.project_id}/{self.uuid}"

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)

    @property
    def has_eval_split(self) -> bool:
        return self.state == self.State.DONE and self.eval_rows > 0
