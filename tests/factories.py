"""One small factory per model."""

from __future__ import annotations

from datetime import timedelta

import factory
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.utils import timezone

from contacts.models import Company, Contact, ContactEmail, Deal
from engagements.models import EmailEngagement, Thread, TrackedMessageId
from teams.models import Membership, RetentionPolicy, Team

PASSWORD = "correct horse battery staple"


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Team {n}")
    retention = factory.RelatedFactory(
        "tests.factories.RetentionPolicyFactory", factory_related_name="team"
    )


class RetentionPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RetentionPolicy


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        user = model_class.objects.create_user(*args, password=PASSWORD, **kwargs)
        # Sign-up verifies addresses (ACCOUNT_EMAIL_VERIFICATION): these users have done it.
        EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
        return user


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.MEMBER


class CompanyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Company

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Company {n}")
    domain = factory.Sequence(lambda n: f"company{n}.example")


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    team = factory.SubFactory(TeamFactory)
    first_name = factory.Sequence(lambda n: f"First{n}")
    last_name = "Example"


class ContactEmailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContactEmail

    contact = factory.SubFactory(ContactFactory)
    team = factory.SelfAttribute("contact.team")
    email = factory.Sequence(lambda n: f"person{n}@example.org")
    is_primary = True


class DealFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Deal

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Deal {n}")
    amount = 1000


class ThreadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Thread

    team = factory.SubFactory(TeamFactory)
    subject = factory.Sequence(lambda n: f"Subject {n}")


class EmailEngagementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EmailEngagement

    thread = factory.SubFactory(ThreadFactory)
    team = factory.SelfAttribute("thread.team")
    direction = EmailEngagement.Direction.INCOMING
    message_id = factory.Sequence(lambda n: f"msg{n}@mail.example")
    from_address = "sender@mail.example"
    subject = factory.SelfAttribute("thread.subject")
    body_text = "Hello"
    sent_at = factory.Sequence(lambda n: timezone.now() - timedelta(minutes=1000 - n))


class TrackedMessageIdFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrackedMessageId

    thread = factory.SubFactory(ThreadFactory)
    team = factory.SelfAttribute("thread.team")
    message_id = factory.Sequence(lambda n: f"tracked{n}@mail.example")
