"""`qwatch-edge`: the edge node's command line (Typer).

`run` starts the agent. Other subcommands live in the modules that own them and are
registered here with ONE line each in `_SUBCOMMANDS` ("name": "module:function"); the
function is registered with `app.command(name)`. A module that does not exist yet is
skipped, so a half-built tree still runs the agent. Any other import error is raised:
a broken subcommand must be loud, not silently missing.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from protocols.cli_errors import EXIT_NO_BROKER, id_option, parse_hostport, run_cli
from protocols.errors import ConfigError, QwatchError

app = typer.Typer(
    name="qwatch-edge",
    help="qwatch edge node: bands, cameras, outbox and MQTT link.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One line per subcommand owned by another module: "command name": "module:function".
_SUBCOMMANDS: dict[str, str] = {
    "replay": "edge.replay:replay",
    "plan": "edge.plan:plan",
    "camera-test": "edge.camera.cli:camera_test",
    "enrol": "edge.enrol:enrol",
    "doctor": "edge.doctor:doctor",
    "install": "edge.install:install",
    "uninstall": "edge.install:uninstall",
}

EXIT_CONFIG = 2


@app.callback()
def _group() -> None:
    """qwatch edge node: bands, cameras, outbox and MQTT link."""

log = logging.getLogger("qwatch.edge.cli")


def broker_address(broker: str | None, credentials: Path | None) -> tuple[str, int]:
    """`--broker` if given, else the bundle's broker, else the loopback default `127.0.0.1:1883`."""
    if broker is not None:
        return parse_hostport(broker)
    if credentials is not None:
        from protocols.credentials import load_credentials

        creds = load_credentials(credentials)
        return creds.broker_host, creds.broker_port
    return "127.0.0.1", 1883


def fail_config(err: QwatchError) -> None:
    """Print a configuration error without a traceback and exit with status 2."""
    typer.echo(f"qwatch-edge: configuration error: {err}", err=True)
    raise typer.Exit(EXIT_CONFIG)


def setup_logging(level: str) -> None:
    """Key=value logs on stderr; every line carries the logger name (module) and level."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )


@app.command("run")
def run(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", help="site YAML (docs/protocol.md §3)")],
    keys: Annotated[Path, typer.Option("--keys", help="band key file, JSON, mode 0600")],
    node: Annotated[str, typer.Option("--node", help="this node's ID (MQTT topic segment)",
                                      callback=id_option("node ID"))] = "edge-01",
    broker: Annotated[
        str | None,
        typer.Option("--broker", help="MQTT broker HOST:PORT (default: the bundle's broker with --credentials, "
                     "else 127.0.0.1:1883)"),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option("--credentials", help="MQTT credentials bundle (mode 0600) from `qwatch-cloud provision-node`: "
                     "TLS to the broker, verified against the province CA, and this node's username/password"),
    ] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="outbox and recordings")] = Path(
        "/var/lib/qwatch"
    ),
    # Option bounds are AgentOptions' (edge/agent.py AGENT_BOUNDS); tests/edge/test_cli.py checks they match.
    sim_seed: Annotated[int, typer.Option("--sim-seed", min=0, help="seed of the sim receivers")] = 0,
    sim_start_ts: Annotated[
        float | None,
        typer.Option("--sim-start-ts", min=0, help="sim: Unix time the simulated world starts at (shared with a "
                     "firmware-simulated serial receiver); default: now"),
    ] = None,
    keepalive: Annotated[int, typer.Option(min=1, max=65535, help="MQTT keepalive, s (stall detection ~1.5x)")] = 15,
    will_delay: Annotated[
        int, typer.Option(min=0, max=86400,
                          help="MQTT 5 Will Delay, s: a reconnect within it sends no offline (0: off)")
    ] = 5,
    reconnect_max: Annotated[float, typer.Option(min=0.5, max=3600, help="max reconnect backoff, s")] = 10.0,
    max_inflight: Annotated[int, typer.Option(min=1, max=65535, help="QoS1 messages in flight")] = 50,
    telemetry_buffer: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="telemetry buffer size (drop-oldest)")] = 600,
    duration: Annotated[float, typer.Option(min=0, help="stop after S seconds (0 = run until signalled)")] = 0.0,
    record: Annotated[
        Path | None,
        typer.Option(help="write the observation log (JSON Lines) here; rotated past 64 MiB, 5 old files kept"),
    ] = None,
    node_telemetry_s: Annotated[float, typer.Option(min=0.1, max=3600, help="node telemetry period, s")] = 5.0,
    no_cameras: Annotated[bool, typer.Option("--no-cameras", help="do not start camera workers")] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the edge agent until SIGTERM/SIGINT (or --duration)."""
    setup_logging(log_level)
    from edge.agent import AgentHooks, AgentOptions, run_agent

    # Development tools (devtools.dev_agent) pass hooks as the click context object.
    hooks = ctx.obj if isinstance(ctx.obj, AgentHooks) else None

    try:
        host, port = broker_address(broker, credentials)
        opts = AgentOptions(
            config=config,
            keys=keys,
            node=node,
            broker_host=host,
            broker_port=port,
            data_dir=data_dir,
            sim_seed=sim_seed,
            sim_start_ts=sim_start_ts,
            keepalive_s=keepalive,
            will_delay_s=will_delay,
            reconnect_max_s=reconnect_max,
            max_inflight=max_inflight,
            telemetry_buffer=telemetry_buffer,
            duration_s=duration,
            record=record,
            node_telemetry_s=node_telemetry_s,
            cameras=not no_cameras,
            credentials=credentials,
        )
        code = run_agent(opts, hooks)
    except ConfigError as err:
        fail_config(err)
        return
    if code == EXIT_NO_BROKER:
        typer.echo(f"qwatch-edge: never connected to the broker {host}:{port} during the run; the log above says "
                   "why (event=mqtt_connect_failed); check --broker/--credentials, then `qwatch-edge doctor`",
                   err=True)
    raise typer.Exit(code)


def _register_subcommands() -> None:
    for name, target in _SUBCOMMANDS.items():
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue  # not written yet
            raise
        func = getattr(module, attr, None)
        if func is not None:
            app.command(name)(func)


_register_subcommands()


def main() -> None:
    """Console-script entry point (`qwatch-edge`): errors are one or two lines, never a traceback."""
    run_cli(app, "qwatch-edge")


if __name__ == "__main__":
    main()
