"""`qwatch-edge` with development hooks: the synthetic alert storm and a scripted escape.

    python -m devtools.dev_agent run [qwatch-edge run options] [--alert-storm N --storm-rate R
        --storm-id NAME] [--escape-at S --escape-band ID]

Every other option is `qwatch-edge run`'s. The extra options are injected into the agent
through `edge.agent.AgentHooks`, so the product's command line carries no test options:

- `--alert-storm N` (with `--storm-rate`, `--storm-id`): N synthetic alert messages with
  deterministic IDs (devtools.storm), on top of the pipeline, or alone when the site has no
  receivers. The fault-injection suite and the edge benchmarks use it.
- `--escape-at S` (with `--escape-band`): the sim receivers' scenario has one person cross
  the gate S seconds after the start (negative: already outside). `make demo` uses it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from devtools.storm import AlertStorm
from edge.agent import AgentHooks, AgentOptions
from protocols.site_config import SiteConfig


def dev_options() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--alert-storm", type=int, default=0, help="raise N synthetic alerts")
    ap.add_argument("--storm-rate", type=float, default=50.0, help="synthetic alerts per second")
    ap.add_argument("--storm-id", default="storm", help="storm name (alert IDs derive from it)")
    ap.add_argument("--escape-at", type=float, default=None,
                    help="sim: a person crosses the gate S s after start (negative: already outside)")
    ap.add_argument("--escape-band", type=int, default=0, help="sim: band that escapes (0: first band)")
    return ap


def hooks_for(args: argparse.Namespace) -> AgentHooks:
    """The agent hooks the development options ask for."""
    storm = None
    if args.alert_storm > 0:
        def storm(opts: AgentOptions, site: SiteConfig) -> AlertStorm:
            return AlertStorm(total=args.alert_storm, rate=args.storm_rate, storm_id=args.storm_id,
                              site=site.site.id, node=opts.node, data_dir=opts.data_dir)
    scenario = None
    if args.escape_at is not None:
        def scenario(site: SiteConfig) -> Any:
            if not site.bands:
                return None
            from edge.sim.scenarios import demo_scenario

            band = args.escape_band or site.bands[0].id
            return demo_scenario(site, escape_band=band, escape_at_s=args.escape_at)
    return AgentHooks(scenario=scenario, alert_source=storm)


def main(argv: list[str] | None = None) -> None:
    args, rest = dev_options().parse_known_args(sys.argv[1:] if argv is None else argv)
    from edge.cli import app

    app(args=rest, obj=hooks_for(args), prog_name="devtools.dev_agent")


if __name__ == "__main__":
    main()
