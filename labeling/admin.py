from __future__ import annotations

from django.contrib import admin

from labeling.models import Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "archived", "created_at"]
    list_filter = ["archived"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "active", "joined_at"]
    list_filter = ["role", "active", "project"]
    search_fields = ["user__username", "project__name"]
    autocomplete_fields = ["user", "project"]
