"""crm_site.db.any_of: the same rows as a plain list, whatever the values hold."""

import pytest

from crm_site.db import any_of
from teams.models import Team

NAMES = ["plain", "line\nbreak", "", "quote ' and \" and {braces}", "back\\slash", "Renée"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "wanted",
    [
        ["plain", "Renée", "missing"],  # joined into one text parameter
        ["line\nbreak", "plain"],  # a value with the separator: sent as a list
        ["", "back\\slash", "quote ' and \" and {braces}"],  # an empty value: as a list
        [],
        [f"many-{n}" for n in range(3000)] + ["plain"],
    ],
)
def test_any_of_finds_what_a_list_finds(wanted):
    for name in NAMES:
        Team.objects.create(name=name)

    found = set(Team.objects.filter(name__in=any_of(wanted)).values_list("name", flat=True))

    assert found == set(NAMES) & set(wanted)
