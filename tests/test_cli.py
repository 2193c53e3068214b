"""One command, ``yolo11-triton`` (also ``python -m python_models``): every subcommand answers --help with its own
flags, a wrong one is refused with the list, and the scripts compose and Kubernetes call are the same commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from python_models import cli

ROOT = Path(__file__).resolve().parents[1]
EVERY_COMMAND = [[name] for name in cli.COMMANDS] + [[group, name] for group, (_, commands) in cli.GROUPS.items()
                                                     for name in commands]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_every_subcommand_has_help_with_its_own_flags(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([*command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: yolo11-triton {' '.join(command)}"), out[:200]


def test_the_top_level_help_lists_every_command_with_examples_and_wrong_names_are_refused(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in [*cli.COMMANDS, *cli.GROUPS]) and "examples:" in out
    assert cli.main(["bench", "--help"]) == 0 and "bench gpu" in capsys.readouterr().out
    assert cli.main(["serv"]) == 2 and "no command 'serv'" in capsys.readouterr().err
    assert cli.main(["bench", "gpus"]) == 2 and "no subcommand 'gpus'" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_the_installed_command_and_the_module_and_the_scripts_compose_calls_are_one_command():
    script = Path(sys.executable).parent / "yolo11-triton"
    assert script.exists(), "pip install -e . installs the console command (tools/bootstrap.sh)"
    for argv in ([str(script), "check", "--help"], [sys.executable, "-m", "python_models", "check", "--help"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "check server" in result.stdout, result.stderr
    wrapper = subprocess.run([sys.executable, str(ROOT / "tools" / "check_server.py"), "--help"], capture_output=True,
                             text=True, timeout=120)
    assert wrapper.returncode == 0 and "--perf-budget-s" in wrapper.stdout
    kept = {p.stem for p in (ROOT / "tools").glob("*.py")}
    callers = "".join((ROOT / f).read_text() for f in ("docker-compose.yml", "deploy/kubernetes/base/deployment.yaml",
                                                        "deploy/kubernetes/base/export-job.yaml"))
    assert kept == {stem for stem in kept if f"tools/{stem}.py" in callers}, "a script nothing calls by path"


def test_where_the_server_is_is_said_the_same_way_to_every_command():
    """--grpc-url, --http-url and --metrics-url are HOST:PORT everywhere (a pasted URL is reduced to it); detect
    takes several --grpc-url, one per server."""
    import argparse

    from python_models.cli.options import add_server_urls, host_port, metrics_endpoint

    parser = argparse.ArgumentParser()
    add_server_urls(parser, http=True, metrics=True)
    args = parser.parse_args(["--metrics-url", "http://triton:8002/metrics", "--http-url", "https://triton:8000/"])
    assert (args.grpc_url, args.http_url, args.metrics_url) == ("127.0.0.1:8001", "triton:8000", "triton:8002")
    assert metrics_endpoint(args.metrics_url) == "http://triton:8002/metrics" and host_port("h:1") == "h:1"
    several = argparse.ArgumentParser()
    add_server_urls(several, several=True)
    assert several.parse_args(["--grpc-url", "a:1", "--url", "b:2"]).grpc_url == ["a:1", "b:2"]
    for command in ("check_server", "bench_sweep", "soak", "bench_client", "detect"):
        source = (ROOT / "python_models" / "cli" / f"{command}.py").read_text()
        assert "add_server_urls(" in source and 'add_argument("--grpc-url"' not in source, command
