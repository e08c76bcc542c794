from io import StringIO

import pytest
from django.core.management import call_command

from contacts.models import Contact
from engagements.models import EmailEngagement, Thread
from teams.models import Membership

pytestmark = pytest.mark.django_db


def test_demo_data_creates_a_populated_team_once():
    first, second = StringIO(), StringIO()

    call_command("load_demo_data", stdout=first)
    call_command("load_demo_data", stdout=second)

    membership = Membership.objects.get(user__email="demo@threadline.test")
    assert membership.role == Membership.Role.ADMIN
    assert Contact.objects.filter(team=membership.team).count() == 45
    assert Thread.objects.filter(team=membership.team).count() == 2
    assert EmailEngagement.objects.filter(team=membership.team).count() == 5
    assert "demo@threadline.test / threadline-demo" in first.getvalue()
    assert "already present" in second.getvalue()


def test_demo_login_works(client):
    call_command("load_demo_data", stdout=StringIO())

    assert client.login(username="demo", password="threadline-demo")
