import pytest
from django.urls import reverse

from contacts.models import Company, Contact, ContactEmail, Deal
from tests.factories import CompanyFactory, ContactEmailFactory, ContactFactory, DealFactory

pytestmark = pytest.mark.django_db


def test_owner_can_create_contact_with_several_emails(client_for, owner, team):
    company = CompanyFactory(team=team)

    response = client_for(owner).post(
        reverse("contacts:contact_create"),
        {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "emails": "Ada@Example.com, ada.l@example.org",
            "company": company.pk,
        },
    )

    contact = Contact.objects.get(team=team)
    assert response.status_code == 302
    assert response.url == contact.get_absolute_url()
    assert contact.company == company
    assert contact.owner == owner
    assert contact.primary_email == "ada@example.com"
    assert sorted(contact.emails.values_list("email", flat=True)) == [
        "ada.l@example.org",
        "ada@example.com",
    ]


def test_update_replaces_emails_and_changes_primary(client_for, owner, team):
    contact = ContactFactory(team=team)
    ContactEmailFactory(contact=contact, email="old@example.com")

    client_for(owner).post(
        reverse("contacts:contact_update", args=[contact.pk]),
        {"first_name": "Ada", "emails": "new@example.com\nsecond@example.com"},
    )

    emails = {e.email: e.is_primary for e in contact.emails.all()}
    assert emails == {"new@example.com": True, "second@example.com": False}


def test_rejects_email_used_by_another_contact_of_the_team(client_for, owner, team):
    ContactEmailFactory(contact=ContactFactory(team=team), email="taken@example.com")

    response = client_for(owner).post(
        reverse("contacts:contact_create"), {"first_name": "X", "emails": "TAKEN@example.com"}
    )

    assert response.status_code == 400
    assert "Already used by another contact" in response.content.decode()
    assert Contact.objects.filter(team=team).count() == 1


def test_same_email_is_allowed_in_another_team(client_for, owner, other_team):
    ContactEmailFactory(contact=ContactFactory(team=other_team), email="shared@example.com")

    response = client_for(owner).post(
        reverse("contacts:contact_create"), {"first_name": "X", "emails": "shared@example.com"}
    )

    assert response.status_code == 302


def test_rejects_invalid_email_and_re_renders_with_error(client_for, owner):
    response = client_for(owner).post(
        reverse("contacts:contact_create"), {"first_name": "X", "emails": "not-an-email"}
    )

    assert response.status_code == 400
    assert "Not a valid email address: not-an-email" in response.content.decode()
    assert not Contact.objects.exists()


def test_rejects_contact_without_name_or_email(client_for, owner):
    response = client_for(owner).post(reverse("contacts:contact_create"), {"phone": "123"})

    assert response.status_code == 400
    assert not Contact.objects.exists()


def test_form_offers_only_own_teams_companies(client_for, owner, team, other_team):
    CompanyFactory(team=team, name="Ours Inc")
    theirs = CompanyFactory(team=other_team, name="Theirs Inc")

    page = client_for(owner).get(reverse("contacts:contact_create")).content.decode()
    response = client_for(owner).post(
        reverse("contacts:contact_create"), {"first_name": "X", "company": theirs.pk}
    )

    assert "Ours Inc" in page
    assert "Theirs Inc" not in page
    assert response.status_code == 400
    assert not Contact.objects.exists()


def test_deal_form_rejects_other_teams_contacts(client_for, owner, other_team):
    theirs = ContactFactory(team=other_team)

    response = client_for(owner).post(
        reverse("contacts:deal_create"),
        {"name": "Big deal", "stage": "qualified", "contacts": [theirs.pk]},
    )

    assert response.status_code == 400
    assert not Deal.objects.exists()


def test_owner_can_create_deal_with_contacts_and_company(client_for, owner, team):
    contact = ContactFactory(team=team)
    company = CompanyFactory(team=team)

    response = client_for(owner).post(
        reverse("contacts:deal_create"),
        {
            "name": "Big deal",
            "stage": "qualified",
            "amount": "1200.50",
            "company": company.pk,
            "contacts": [contact.pk],
        },
    )

    deal = Deal.objects.get()
    assert response.status_code == 302
    assert deal.team_id == owner.membership.team_id
    assert list(deal.contacts.all()) == [contact]
    assert deal.company == company


def test_deal_rejects_negative_amount(client_for, owner):
    response = client_for(owner).post(
        reverse("contacts:deal_create"), {"name": "D", "stage": "won", "amount": "-5"}
    )

    assert response.status_code == 400
    assert "cannot be negative" in response.content.decode()


def test_company_domain_is_normalised(client_for, owner):
    client_for(owner).post(
        reverse("contacts:company_create"), {"name": "Acme", "domain": "https://www.Acme.io/"}
    )

    assert Company.objects.get().domain == "acme.io"


def test_contact_list_searches_names_emails_and_company(client_for, owner, team):
    company = CompanyFactory(team=team, name="Globex")
    ada = ContactFactory(team=team, first_name="Ada", last_name="Lovelace")
    ContactEmailFactory(contact=ada, email="countess@engines.example")
    ContactFactory(team=team, first_name="Grace", last_name="Hopper", company=company)
    client = client_for(owner)

    def names(q):
        page = client.get(reverse("contacts:contact_list"), {"q": q}).context["page"]
        return {c.first_name for c in page.object_list}

    assert names("lovelace") == {"Ada"}
    assert names("countess") == {"Ada"}
    assert names("globex") == {"Grace"}
    assert names("ada lovelace") == {"Ada"}
    assert names("") == {"Ada", "Grace"}


def test_contact_list_paginates(client_for, owner, team):
    ContactFactory.create_batch(30, team=team)

    first = client_for(owner).get(reverse("contacts:contact_list"))
    second = client_for(owner).get(reverse("contacts:contact_list"), {"page": 2})

    assert len(first.context["page"].object_list) == 25
    assert len(second.context["page"].object_list) == 5
    assert "Page 1 of 2" in first.content.decode()


def test_company_list_pages_are_ordered_by_name_without_repeats(client_for, owner, team):
    for name in ["Zeta", "Alpha", "Mu", *[f"Beta {n:02}" for n in range(27)]]:
        CompanyFactory(team=team, name=name)
    client = client_for(owner)

    first = client.get(reverse("contacts:company_list"))
    second = client.get(reverse("contacts:company_list"), {"page": 2})

    seen = [c.name for c in first.context["page"].object_list] + [
        c.name for c in second.context["page"].object_list
    ]
    assert seen == sorted(seen)
    assert len(set(seen)) == 30
    assert seen[0] == "Alpha" and seen[-1] == "Zeta"


def test_contact_list_shows_only_own_team(client_for, owner, team, other_team):
    ContactFactory(team=team, first_name="Mine")
    ContactFactory(team=other_team, first_name="Theirs")

    body = client_for(owner).get(reverse("contacts:contact_list")).content.decode()

    assert "Mine" in body
    assert "Theirs" not in body


def test_contact_list_query_count_does_not_grow(
    client_for, owner, team, django_assert_max_num_queries
):
    for _ in range(20):
        ContactEmailFactory(contact=ContactFactory(team=team, company=CompanyFactory(team=team)))
    client = client_for(owner)

    with django_assert_max_num_queries(8):
        client.get(reverse("contacts:contact_list"))


def test_empty_contact_list_explains_what_to_do(client_for, owner):
    body = client_for(owner).get(reverse("contacts:contact_list")).content.decode()

    assert "No contacts yet" in body
    assert "Import a CSV file" in body


def test_owner_can_delete_contact(client_for, owner, team):
    contact = ContactFactory(team=team)
    ContactEmailFactory(contact=contact)

    response = client_for(owner).post(reverse("contacts:contact_delete", args=[contact.pk]))

    assert response.status_code == 302
    assert not Contact.objects.exists()
    assert not ContactEmail.objects.exists()


def test_delete_get_does_not_mutate(client_for, owner, team):
    contact = ContactFactory(team=team)

    response = client_for(owner).get(reverse("contacts:contact_delete", args=[contact.pk]))

    assert response.status_code == 405
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_teammate_sees_and_edits_team_records(client_for, teammate, team):
    deal = DealFactory(team=team)

    response = client_for(teammate).post(
        reverse("contacts:deal_update", args=[deal.pk]),
        {"name": "Renamed", "stage": "won"},
    )

    deal.refresh_from_db()
    assert response.status_code == 302
    assert deal.name == "Renamed"


def test_anonymous_is_redirected_to_login(client):
    response = client.get(reverse("contacts:contact_list"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))
