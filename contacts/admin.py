from django.contrib import admin

from .models import Company, Contact, ContactEmail, Deal


class ContactEmailInline(admin.TabularInline):
    model = ContactEmail
    extra = 0
    exclude = ["team"]


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["__str__", "company", "team", "owner", "created_at"]
    list_filter = ["team"]
    search_fields = ["first_name", "last_name", "emails__email"]
    raw_id_fields = ["company", "owner"]
    inlines = [ContactEmailInline]

    def save_formset(self, request, form, formset, change):  # type: ignore[no-untyped-def]
        for obj in formset.save(commit=False):
            obj.team = form.instance.team
            obj.save()
        for obj in formset.deleted_objects:
            obj.delete()


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "domain", "team", "owner"]
    list_filter = ["team"]
    search_fields = ["name", "domain"]
    raw_id_fields = ["owner"]


@admin.register(Deal)
class DealAdmin(admin.ModelAdmin):
    list_display = ["name", "stage", "amount", "company", "team"]
    list_filter = ["team", "stage"]
    search_fields = ["name"]
    raw_id_fields = ["company", "owner", "contacts"]
