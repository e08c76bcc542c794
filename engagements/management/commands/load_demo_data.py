from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from contacts.models import Company, Contact, ContactEmail, Deal
from engagements.models import Attachment, EmailEngagement, EmailTemplate
from engagements.services import Address, EmailData, log_email
from teams.models import Membership
from teams.services import create_team

DEMO_EMAIL = "demo@threadline.test"
DEMO_PASSWORD = "threadline-demo"  # noqa: S105 - printed on purpose: it is the demo login

COMPANIES = [
    ("Analytical Engines Ltd", "analytical.example"),
    ("Brightwater Logistics", "brightwater.example"),
    ("Café Lumière", "cafe-lumiere.example"),
]
CONTACTS = [
    ("Ada", "Lovelace", "ada@analytical.example", "CTO", 0),
    ("Charles", "Babbage", "charles@analytical.example", "Founder", 0),
    ("Grace", "Hopper", "grace@brightwater.example", "Head of Operations", 1),
    ("Élodie", "Marchand", "elodie@cafe-lumiere.example", "Gérante", 2),
    ("Tim", "Okafor", "tim.okafor@brightwater.example", "Procurement", 1),
]


TEMPLATES = [
    (
        "First contact",
        "{company|Your team} and Threadline",
        "Hi {first_name|there},\n\nI'd love to show you how {company|your team} could keep every "
        "customer conversation in one place. Would a 20-minute call next week work?\n\n"
        "Best,\n{sender_name}\n{signature}",
    ),
    (
        "Follow-up after a demo",
        "Thanks for your time, {first_name|there}",
        "Hi {first_name|there},\n\nThank you for the demo today. As promised, here is a summary "
        "and the next steps for {deal|our proposal}.\n\n{sender_name}\n{signature}",
    ),
]


class Command(BaseCommand):
    help = "Create a demo team with contacts, companies, deals and email timelines (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        User = get_user_model()
        user = User.objects.filter(email=DEMO_EMAIL).first()
        if user is not None and Membership.objects.filter(user=user).exists():
            self.stdout.write(
                f"Demo data already present. Log in as {DEMO_EMAIL} / {DEMO_PASSWORD}"
            )
            return
        with transaction.atomic():
            self._create()
        self.stdout.write(
            self.style.SUCCESS(f"Demo data created. Log in as {DEMO_EMAIL} / {DEMO_PASSWORD}")
        )

    def _create(self) -> None:
        User = get_user_model()
        user = User.objects.create_user(username="demo", email=DEMO_EMAIL, password=DEMO_PASSWORD)
        EmailAddress.objects.create(user=user, email=DEMO_EMAIL, verified=True, primary=True)
        team = create_team(name="Demo Team", owner=user)
        companies = [
            Company.objects.create(team=team, name=name, domain=domain, owner=user)
            for name, domain in COMPANIES
        ]
        contacts = []
        for first, last, email, title, company_index in CONTACTS:
            contact = Contact.objects.create(
                team=team,
                first_name=first,
                last_name=last,
                job_title=title,
                company=companies[company_index],
                owner=user,
            )
            ContactEmail.objects.create(team=team, contact=contact, email=email, is_primary=True)
            contacts.append(contact)
        for index in range(40):
            contact = Contact.objects.create(
                team=team,
                first_name=f"Prospect {index + 1:02d}",
                last_name="Example",
                company=companies[index % len(companies)],
                owner=user,
            )
            ContactEmail.objects.create(
                team=team,
                contact=contact,
                email=f"prospect{index + 1:02d}@example.com",
                is_primary=True,
            )
        deal = Deal.objects.create(
            team=team,
            name="Analytical Engines — annual licence",
            stage=Deal.Stage.PRESENTATION,
            amount=Decimal("48000"),
            company=companies[0],
            owner=user,
            close_date=(timezone.now() + timedelta(days=30)).date(),
        )
        deal.contacts.set(contacts[:2])
        Deal.objects.create(
            team=team,
            name="Brightwater fleet rollout",
            stage=Deal.Stage.QUALIFIED,
            amount=Decimal("125000"),
            company=companies[1],
            owner=user,
        ).contacts.set([contacts[2], contacts[4]])
        self._threads(user, team, contacts, companies, deal)
        EmailTemplate.objects.bulk_create(
            EmailTemplate(team=team, created_by=user, name=name, subject=subject, body=body)
            for name, subject, body in TEMPLATES
        )

    def _threads(self, user, team, contacts, companies, deal) -> None:  # type: ignore[no-untyped-def]
        now = timezone.now()
        me = Address(DEMO_EMAIL, "Demo User")
        ada = Address("ada@analytical.example", "Ada Lovelace")
        grace = Address("grace@brightwater.example", "Grace Hopper")
        licence = {"companies": [companies[0]], "deals": [deal]}
        fleet = {"contacts": [contacts[2]], "companies": [companies[1]]}
        out, inc = EmailEngagement.Direction.OUTGOING, EmailEngagement.Direction.INCOMING
        # (message id, direction, email fields, records): each reply names its parent.
        emails = [
            (
                "demo-1@threadline.test",
                out,
                {
                    "sender": me,
                    "to": (ada,),
                    "cc": (Address("charles@analytical.example", "Charles Babbage"),),
                    "subject": "Licence proposal for Analytical Engines",
                    "body_text": "Hi Ada,\n\nAs promised, the proposal for the annual licence is "
                    "attached.\n\nBest,\nDemo",
                    "sent_at": now - timedelta(days=6, hours=3),
                },
                {**licence, "contacts": contacts[:2]},
            ),
            (
                "demo-2@analytical.example",
                inc,
                {
                    "sender": ada,
                    "to": (me,),
                    "subject": "Re: Licence proposal for Analytical Engines",
                    "body_html": (
                        "<p>Thanks! Two questions:</p><ol><li>Can we start with <b>15 seats</b>?"
                        "</li><li>Is on-site training included?</li></ol>"
                        "<p><img src='https://tracker.example/pixel.gif' alt='logo'></p>"
                        "<script>alert('never runs')</script><p>— Ada</p>"
                    ),
                    "body_text": "Thanks! Two questions: 15 seats? On-site training?",
                    "in_reply_to": "demo-1@threadline.test",
                    "references": ("demo-1@threadline.test",),
                    "sent_at": now - timedelta(days=5),
                },
                {**licence, "contacts": contacts[:1]},
            ),
            (
                "demo-3@threadline.test",
                out,
                {
                    "sender": me,
                    "to": (ada,),
                    "subject": "Re: Licence proposal for Analytical Engines",
                    "body_text": "Yes to both: 15 seats to start, and one day of on-site training.",
                    "in_reply_to": "demo-2@analytical.example",
                    "references": ("demo-1@threadline.test", "demo-2@analytical.example"),
                    "sent_at": now - timedelta(days=4, hours=20),
                },
                {**licence, "contacts": contacts[:1]},
            ),
            (
                "demo-4@threadline.test",
                out,
                {
                    "sender": me,
                    "to": (grace,),
                    "subject": "Fleet rollout: kickoff call",
                    "body_text": "Hi Grace,\n\nWould Tuesday at 10:00 work for the kickoff call?"
                    "\n\nDemo",
                    "sent_at": now - timedelta(days=2),
                },
                fleet,
            ),
            (
                "demo-5@brightwater.example",
                inc,
                {
                    "sender": grace,
                    "to": (me,),
                    "subject": "Re: Fleet rollout: kickoff call",
                    "body_text": "Tuesday works. I'll bring Tim from procurement.\n\nGrace",
                    "in_reply_to": "demo-4@threadline.test",
                    "references": ("demo-4@threadline.test",),
                    "sent_at": now - timedelta(days=1, hours=22),
                },
                fleet,
            ),
        ]
        logged = []
        for message_id, direction, fields, records in emails:
            source = EmailEngagement.Source.CRM if direction == out else EmailEngagement.Source.SYNC
            logged.append(
                log_email(
                    team=team,
                    email=EmailData(message_id=message_id, **fields),
                    direction=direction,
                    source=source,
                    actor=user if direction == out else None,
                    **records,
                )
            )
        proposal = b"Annual licence proposal: 48,000 EUR, 12 months, 20 seats.\n"
        Attachment.objects.create(
            team=team,
            engagement=logged[0],
            filename="proposal.txt",
            content_type="text/plain",
            size=len(proposal),
            file=ContentFile(proposal, name="proposal.txt"),
        )
