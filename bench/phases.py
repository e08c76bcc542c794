"""What the benchmarks share: each phase runs in its own child process (so its peak RSS is
its own) and reports a JSON line back."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Phase = Callable[[dict], dict]


def setup_django(**env: str) -> None:
    """Django in a phase's process, with extra environment (say, the fakes' endpoints)."""
    sys.path.insert(0, str(ROOT))
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_site.settings")
    import django

    django.setup()


def peak_rss_mb() -> float:
    """The largest peak RSS of this process and its children (a sync's read-ahead child)."""
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    return max(resource.getrusage(w).ru_maxrss for w in who) / 1024


def run_phase(script: str, name: str, cfg: dict) -> dict:
    """Run `script --phase name` in a child process; its last output line is the result."""
    out = subprocess.run(
        [sys.executable, script, "--phase", name, "--config", json.dumps(cfg)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve_phase(phases: dict[str, Phase], name: str, config: str) -> None:
    """The child side of run_phase: run the phase, print its result with the peak RSS."""
    result = phases[name](json.loads(config))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result))


def parse_args(
    parser: argparse.ArgumentParser, phases: dict[str, Phase]
) -> argparse.Namespace | None:
    """A benchmark's arguments. In a phase's own process (run_phase passes --phase and
    --config), run that phase and return None."""
    parser.add_argument("--phase", choices=sorted(phases))
    parser.add_argument("--config")
    args = parser.parse_args()
    if args.phase:
        serve_phase(phases, args.phase, args.config)
        return None
    return args
