"""The docs: a README that fits on a page and links only to what exists, and a site (docs/, mkdocs.yml) that
builds with --strict, so that a broken link or anchor, or a page left out of the navigation, fails CI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12_000


def build(config_root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=config_root, capture_output=True, text=True, timeout=300,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})


def test_the_readme_is_a_landing_page_whose_links_all_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < README_LIMIT, f"README.md is {len(readme)} characters: move detail into docs/"
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", readme) if not t.startswith(("http://", "https://", "#"))]
    assert targets, "the README links into the docs"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert missing == []
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md") if p.name != "index.md"} <= set(targets), \
        "every docs page is reachable from the README"


def test_the_site_builds_strict_and_a_broken_link_or_anchor_or_an_unlisted_page_fails_it(tmp_path):
    result = build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "tracks" / "index.html").exists()
    for name, breakage in (("link", lambda d: (d / "reliability.md").write_text(
                               (d / "reliability.md").read_text() + "\nSee [gone](no-such-page.md).\n")),
                           ("anchor", lambda d: (d / "reliability.md").write_text(
                               (d / "reliability.md").read_text() + "\nSee [x](tracks.md#no-such-section).\n")),
                           ("unlisted page", lambda d: (d / "orphan.md").write_text("# Orphan\n"))):
        copy = tmp_path / name.replace(" ", "_")
        shutil.copytree(ROOT / "docs", copy / "docs")
        shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
        breakage(copy / "docs")
        assert build(copy, copy / "site").returncode != 0, f"a broken {name} passed the strict build"


COMMAND = re.compile(r"(?<![\w/-])(?:\.venv/bin/)?yolo11-triton(?:[ \t]+[^`|;&#\n]*)?(?=$|[`|;&#\n])", re.M)


class Parsed(Exception):
    """Raised right after a command's flags parsed: the command is valid and nothing ran."""


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) for every ``yolo11-triton`` command in a fenced block or a code span of the README and
    the docs: backslash continuations joined, ``[optional ...]`` parts and comments dropped."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text().replace("\\\n", " ")
        chunks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)
        for chunk in chunks:
            for match in COMMAND.finditer(chunk):
                line = re.sub(r"\[[^\]]*\]", "", match.group(0)).strip()
                if line.split()[-1:] != ["..."]:
                    found.append((page.name, line))
    return found


def parse_only(line: str) -> int | str:
    """The command's own argument parsing of ``line`` (no work done): "parsed", or argparse's exit code."""
    import argparse
    import shlex
    from unittest import mock

    from python_models import cli

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        try:
            code = cli.main(shlex.split(line)[1:])
        except Parsed:
            return "parsed"
        except SystemExit as stop:
            return stop.code
    return code


def names_a_command(words: list[str]) -> bool:
    """A mention (``yolo11-triton detect``, ``yolo11-triton check server``): an existing (sub)command, no arguments."""
    from python_models import cli

    if len(words) == 1:
        return words[0] in cli.COMMANDS or words[0] in cli.GROUPS
    return len(words) == 2 and words[0] in cli.GROUPS and words[1] in cli.GROUPS[words[0]][1]


def asks_for_help(words: list[str]) -> bool:
    """The command alone, ``--help``, or ``COMMAND --help``: what the docs show for the help text."""
    return words in ([], ["--help"], ["COMMAND", "--help"])


def test_every_documented_command_is_a_command_whose_flags_parse(capsys):
    commands = documented_commands()
    assert len(commands) > 15 and any("detect" in line for _, line in commands)
    bad = {}
    for page, line in commands:
        words = line.split()[1:]
        if asks_for_help(words) or names_a_command(words):
            continue
        outcome = parse_only(line)
        if outcome != "parsed":
            bad[f"{page}: {line}"] = outcome
    capsys.readouterr()
    assert bad == {}
    assert parse_only("yolo11-triton detect photos/ --model yolo11_trt --out x.jsonl --grcp-url h:1") == 2, \
        "a misspelt flag fails the check"
    assert parse_only("yolo11-triton bench gpus") == 2 and not names_a_command(["bench", "gpus"])


NOT_RUN_HERE = {
    ("serve",): "the README's first command: every server of the suite starts with it (conftest.start_server)",
    ("export",): "tests/test_export.py runs it offline in a copy of the checkout; --profile gpu needs TensorRT",
    ("check", "server"): "tests/test_launcher.py runs it against the session server: defaults, and broken models",
    ("check", "image"): "needs the built serving image (docker compose build)",
    ("check", "image-build"): "tests/test_image_build.py runs it (marked slow)",
    ("soak",): "an hour (--duration 3600); tests/test_soak.py runs it for half a minute",
    ("bench", "gpu"): "needs a GPU",
    ("bench", "preprocess"): "its GPU modes need a GPU",
    ("bench", "sweep"): "minutes of perf_analyzer windows; tests/test_load.py runs it with 1 s windows",
    ("bench", "client"): "minutes of timed runs; the figures in docs/detecting-at-scale.md are its output",
    ("dev", "train-shapes"): "trains for minutes; its output is tests/assets/shapes_yolo11.pt",
    ("dev", "gen-configs"): "tests/test_repository.py checks the committed configs equal what it generates",
}
"""Documented commands this machine cannot run, or that another test runs, and why; every other one runs below."""


def subcommand(words: list[str]) -> tuple[str, ...]:
    from python_models import cli

    return tuple(words[:2]) if words and words[0] in cli.GROUPS else tuple(words[:1])


def runnable_here(line: str, server_url: str, photos: Path) -> list[str] | None:
    """The documented ``line`` as it runs here (against the session server, on the sample photos), or None when it
    is only a mention or ``NOT_RUN_HERE`` says why it cannot."""
    import shlex

    words = shlex.split(line)[1:]
    if asks_for_help(words):
        return ["--help"]
    if names_a_command(words) or subcommand(words) in NOT_RUN_HERE:
        return None
    ran = []
    for i, word in enumerate(words):
        previous = words[i - 1] if i else ""
        ran.append(server_url if previous == "--grpc-url" else str(photos) if word == "photos/"
                   else str(photos.parent / VIDEO) if word == VIDEO else word)
    return ran


VIDEO = "street.avi"
"""The video the docs' tracking example follows: written by the test from a sample photo."""


def test_every_documented_command_that_can_run_here_runs_against_the_session_server(server, sample_dir, tmp_path):
    """The docs' commands (detect on a folder, through one or several addresses; --help) run as written, with only
    the server's address and the photos folder replaced, from a fresh working folder; each writes what it says."""
    photos = tmp_path / "photos"
    shutil.copytree(sample_dir, photos)
    bus = cv2.imread(str(photos / "bus.jpg"))
    video = cv2.VideoWriter(str(tmp_path / VIDEO), cv2.VideoWriter_fourcc(*"MJPG"), 30, (480, 480))
    for t in range(4):
        video.write(bus[4 * t : 4 * t + 480, 3 * t : 3 * t + 480])
    video.release()
    ran = {}
    for page, line in documented_commands():
        argv = runnable_here(line, server.grpc_url, photos)
        if argv is None or tuple(argv) in ran:
            continue
        work = tmp_path / f"run{len(ran)}"
        work.mkdir()
        result = subprocess.run([str(ROOT / ".venv" / "bin" / "yolo11-triton"), *argv], cwd=work, capture_output=True,
                                text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{page}: {line}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        ran[tuple(argv)] = (page, work)
    assert ("--help",) in ran
    detected = [work for argv, (_, work) in ran.items() if argv[0] == "detect" and "--track" not in argv]
    assert len(detected) >= 2, ran
    for work in detected:
        (out,) = work.glob("*.jsonl")
        lines = out.read_text().splitlines()
        assert len(lines) == len(list(photos.iterdir())), out
    (tracked,) = [work for argv, (_, work) in ran.items() if "--track" in argv]
    assert len((tracked / "tracks.jsonl").read_text().splitlines()) == 4 and list((tracked / "annotated").glob("*.avi"))


def test_every_documented_command_runs_here_or_says_why_not():
    """A command added to the docs is run by the test above unless ``NOT_RUN_HERE`` names it with the reason; a
    reason kept for a command the docs no longer show is dropped."""
    shown = {subcommand(line.split()[1:]) for _, line in documented_commands()}
    assert set(NOT_RUN_HERE) <= shown, set(NOT_RUN_HERE) - shown
    assert runnable_here("yolo11-triton soak --duration 3600", "h:1", Path("p")) is None
    assert runnable_here("yolo11-triton detect photos/ --grpc-url gpu1:8001 --grpc-url gpu2:8001", "h:1", Path("p")) \
        == ["detect", "p", "--grpc-url", "h:1", "--grpc-url", "h:1"]
    assert runnable_here("yolo11-triton detect", "h:1", Path("p")) is None, "a mention runs nothing"
