"""Each team's logging address token (SPEC L4): added empty, filled one by one, then unique."""

from django.db import migrations, models

import teams.models


def fill_tokens(apps, schema_editor):
    Team = apps.get_model("teams", "Team")
    for team in Team.objects.filter(logging_token__isnull=True).only("pk"):
        team.logging_token = teams.models.new_logging_token()
        team.save(update_fields=["logging_token"])


class Migration(migrations.Migration):
    dependencies = [("teams", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="team",
            name="logging_token",
            field=models.CharField(editable=False, max_length=40, null=True),
        ),
        migrations.RunPython(fill_tokens, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="team",
            name="logging_token",
            field=models.CharField(
                default=teams.models.new_logging_token, editable=False, max_length=40, unique=True
            ),
        ),
    ]
