"""The serving image's build rehearsed off the GPU host: docker-compose.yml's own steps in a stand-in of the release."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from python_models.export import deployment as d

SERVICE = "triton"
"""The compose service whose build is rehearsed (export and check build the same image; a compose test holds them)."""
PREPARED = Path(".venv") / "image-rehearsal"
"""Under the checkout (git-ignored): the DALI-backend-style folder and the wheels the rehearsal's pip may install,
made once by ``tools/install_image_rehearsal.sh`` (``tools/bootstrap.sh`` runs it): the rehearsal downloads nothing."""
FAKED = ("opt", "tmp")
"""The image's top folders the rehearsal puts under its fake root; the Dockerfile's text and ENV are rewritten to it."""
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The base image's PATH before the release's ENV (build.py cannot show the -py3-min image's own): the host's tools
(sh, find, chmod) come from here, the image's ``python3`` from the fake root's /usr/bin ahead of it."""
STAND_INS = {"perf-analyzer": "its wheel is manylinux_2_38 (glibc >= 2.38: Ubuntu 24.04, the release), this host has "
                              "{glibc}; tools/install_perf_analyzer.sh installs it only there. It declares no "
                              "dependencies, so metadata alone resolves as the wheel does"}
"""What the ``image`` extra needs and this host's environment cannot hold: pip finds metadata-only stand-ins."""
NOT_COVERED = (
    "apt-get steps (skipped: they would install into this host): the image's libGL, GLib and python3-venv",
    "the release's files (check image --python-only names them): its backends, trtexec, libnvinfer, the compiler",
    "Python {python} and this host's glibc instead of the release's Python {release_python} on Ubuntu "
    f"{d.UBUNTU_VERSION}; the DALI backend's folder is built with this Python's wheels (numpy's is per Python)",
    "the packages the venv resolves against come from this checkout's environment (the seed), not fresh from PyPI: "
    "pip installs only what it lacks or what PYTHONPATH shadows, from wheels fetched once",
    "the containers' run-time user (tests/test_compose runs the check's writable-folder test as another user)",
)


def dockerfile_instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comment lines dropped, as Docker reads them."""
    instructions, pending = [], ""
    for line in dockerfile.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def compose_dockerfile(compose_file: Path) -> str:
    """The image's Dockerfile: the serving service's ``build.dockerfile_inline`` in ``compose_file``."""
    import yaml

    compose = yaml.safe_load(compose_file.read_text())
    return compose["services"][SERVICE]["build"]["dockerfile_inline"]


_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::([-+])([^}]*))?\}|(\w+))")


def expand(value: str, env: dict[str, str]) -> str:
    """A Dockerfile ENV value with ``$NAME``, ``${NAME}``, ``${NAME:-word}`` and ``${NAME:+word}`` substituted."""
    def substitute(match: re.Match) -> str:
        name = match.group(1) or match.group(4)
        current = env.get(name, "")
        if match.group(2) == "-":
            return current or match.group(3)
        if match.group(2) == "+":
            return match.group(3) if current else ""
        return current

    return _VARIABLE.sub(substitute, value)


def env_assignments(arguments: str) -> list[tuple[str, str]]:
    """(name, raw value) of one ENV instruction: ``ENV A=1 B=2`` or the legacy ``ENV NAME value``."""
    words = shlex.split(arguments, posix=True)
    if "=" not in words[0]:
        name, _, value = arguments.partition(" ")
        return [(name, value.strip())]
    return [tuple(word.split("=", 1)) for word in words]  # type: ignore[misc]


def apply_env(env: dict[str, str], assignments: list[tuple[str, str]],
              rewrite: Callable[[str], str] = lambda value: value) -> dict[str, str]:
    """``env`` after one ENV instruction: its values (``rewrite`` first) expanded against ``env`` as it was before
    it, as Docker does."""
    after = dict(env)
    for name, value in assignments:
        after[name] = expand(rewrite(value), env)
    return after


def image_env(dockerfile: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment after the release's ENV (``deployment.RELEASE_ENV``, over ``base``: a plain PATH, no
    PYTHONPATH) and ``dockerfile``'s ENV instructions, in order."""
    env = dict(base if base is not None else {"PATH": BASE_PATH})
    for name, value, _ in d.RELEASE_ENV:
        env = apply_env(env, [(name, value)])
    for keyword, arguments in dockerfile_instructions(dockerfile):
        if keyword == "ENV":
            env = apply_env(env, env_assignments(arguments))
    return env


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def seed_paths() -> list[str]:
    """The site-packages of the environment running this: the packages the rehearsal's venv starts from."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def versions(paths: list[str]) -> dict[str, str]:
    """{canonical name: version} of the distributions on ``paths``, the first found winning, as pip sees them."""
    found: dict[str, str] = {}
    for dist in metadata.distributions(path=paths):
        found.setdefault(canonical(dist.metadata["Name"]), dist.version)
    return found


@dataclass(frozen=True)
class Prepared:
    """What ``tools/install_image_rehearsal.sh`` made under the checkout's ``PREPARED``."""

    home: Path

    @property
    def dali(self) -> Path:
        return self.home / "dali"

    @property
    def wheelhouse(self) -> Path:
        return self.home / "wheelhouse"

    @property
    def stamp(self) -> Path:
        return self.home / "stamp.json"


def prepared_key() -> dict:
    """What the DALI folder depends on: the recorded command, and this Python (numpy's wheel is per Python)."""
    return {"command": list(d.DALI_BACKEND_PIP_INSTALL), "python": sys.implementation.cache_tag,
            "platform": sysconfig.get_platform()}


def wheelhouse_requirements(dali: Path) -> list[str]:
    """The wheels the rehearsal's pip may need, as this environment has them: pip and the build backend (the venv
    upgrades pip, and builds the project in isolation), and every distribution the DALI folder holds in another
    version (on PYTHONPATH, pip takes that one as installed and installs this one into the venv, as in the image)."""
    mine, folder = versions(seed_paths()), versions([str(dali)])
    wanted = [name for name in ("pip", "setuptools") if name in mine]
    wanted += sorted(name for name, version in folder.items() if name in mine and mine[name] != version)
    return [f"{name}=={mine[name]}" for name in dict.fromkeys(wanted)]


def missing_wheels(prepared: Prepared) -> list[str]:
    have = set()
    for wheel in prepared.wheelhouse.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        have.add(f"{canonical(name)}=={version}")
    return [r for r in wheelhouse_requirements(prepared.dali) if r not in have]


def not_prepared(prepared: Prepared) -> str | None:
    """Why the rehearsal cannot run from ``prepared`` (then run tools/install_image_rehearsal.sh), or None."""
    fix = "run tools/install_image_rehearsal.sh (tools/bootstrap.sh does)"
    if stamp(prepared).get("key") != prepared_key():
        return (f"no DALI-backend folder made by {' '.join(d.DALI_BACKEND_PIP_INSTALL)} for this Python at "
                f"{prepared.dali}: {fix}")
    if missing := missing_wheels(prepared):
        return f"the wheelhouse {prepared.wheelhouse} lacks {', '.join(missing)}: {fix}"
    return None


def stamp(prepared: Prepared) -> dict:
    """What made the DALI folder: ``key`` (``prepared_key()`` then), the command that ran, its time and size."""
    try:
        return json.loads(prepared.stamp.read_text())
    except (OSError, ValueError):
        return {}


def reachable(url: str) -> bool:
    try:
        socket.getaddrinfo(urlparse(url).hostname, 443)
        return True
    except OSError:
        return False


def prepare(prepared: Prepared, log: Callable[[str], None] = print) -> None:
    """Make the DALI backend's folder the way its build does (the recorded command, dependencies included) with this
    Python, and fetch the wheels the rehearsal's pip may install; each only when missing or made otherwise."""
    if not_prepared(prepared) is None:
        log(f"image-build: prepared {prepared.home}")
        return
    if stamp(prepared).get("key") != prepared_key():
        shutil.rmtree(prepared.dali, ignore_errors=True)
        prepared.home.mkdir(parents=True, exist_ok=True)
        prepared.stamp.unlink(missing_ok=True)
        command = [a.replace("{target}", str(prepared.dali)) for a in d.DALI_BACKEND_PIP_INSTALL]
        index = command.index("--extra-index-url")
        if not reachable(command[index + 1]):  # pip would retry it for minutes, then take PyPI's same release
            log(f"image-build: {command[index + 1]} is unreachable from here: {command[-1]} from the other indexes")
            del command[index:index + 2]
        log(f"image-build: {' '.join(command)}")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", *command], check=True)
        seconds = time.monotonic() - started
        mib = sum(f.stat().st_size for f in prepared.dali.rglob("*") if f.is_file()) / 2**20
        log(f"image-build: made {prepared.dali} ({mib:,.0f} MiB) in {seconds:.0f} s")
        prepared.stamp.write_text(json.dumps({"key": prepared_key(), "ran": command, "seconds": round(seconds),
                                              "mib": round(mib)}))
    if wanted := missing_wheels(prepared):
        prepared.wheelhouse.mkdir(parents=True, exist_ok=True)
        log(f"image-build: wheels for the rehearsal's pip: {' '.join(wanted)}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "--dest", str(prepared.wheelhouse), *wanted], check=True)


@dataclass
class Rehearsal:
    """The rehearsal's verdict: ``ok`` when every step it could run passed; ``lines`` say what ran, what stood in."""

    ok: bool = True
    reason: str = ""
    lines: list[str] = field(default_factory=list)


class _Build:
    """One rehearsal: the fake root, the environment, the working directory, as Docker carries them between steps."""

    def __init__(self, work: Path, checkout: Path, prepared: Prepared, result: Rehearsal) -> None:
        self.root, self.checkout, self.prepared, self.result = work / "root", checkout, prepared, result
        self.standins = work / "stand-ins"
        self.cwd = self.root
        self.seeded = False
        python = getattr(sys, "_base_executable", None) or sys.executable
        for top in FAKED:
            (self.root / top).mkdir(parents=True)
        (self.root / "tmp").chmod(0o1777)
        bin_ = self.root / "usr" / "bin"
        bin_.mkdir(parents=True)
        # A wrapper, not a link: the venv must record the real interpreter's home to find its standard library.
        (bin_ / "python3").write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
        (bin_ / "python3").chmod(0o755)
        dali = self.image_path(d.DALI_BACKEND_WHEEL_DIR)
        dali.parent.mkdir(parents=True)
        dali.symlink_to(prepared.dali, target_is_directory=True)
        (self.root / "root").mkdir()
        self.env = {"PATH": f"{bin_}:{BASE_PATH}", "HOME": str(self.root / "root"), "LANG": "C.UTF-8",
                    "TMPDIR": str(self.root / "tmp"),  # the image's temporary folder is /tmp
                    # Offline: pip reads no configuration of this host and installs only the prepared wheels.
                    "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(prepared.wheelhouse)}

    def say(self, line: str) -> None:
        self.result.lines.append(line.replace(str(self.root), "") if str(self.root) in line else line)

    def image_path(self, path: str) -> Path:
        return Path(self.faked(path))

    def faked(self, text: str) -> str:
        """``text`` (a command, an ENV value, a path) with the image's /opt and /tmp moved under the fake root."""
        return re.sub(rf"(?<![\w./$-])/({'|'.join(FAKED)})(?![\w-])", lambda m: f"{self.root}/{m.group(1)}", text)

    def set_env(self, assignments: list[tuple[str, str]], where: str = "") -> None:
        self.env = apply_env(self.env, assignments, self.faked)
        for name, _ in assignments:
            self.say(f"  {where}ENV {name}={self.env[name]}")

    def copy(self, arguments: str) -> None:
        *sources, dest = shlex.split(arguments)
        target = Path(self.faked(dest)) if dest.startswith("/") else self.cwd / dest
        ignored = [line[3:] for line in (self.checkout / ".dockerignore").read_text().splitlines()
                   if line.startswith("**/")]
        for source in sources:
            origin = self.checkout / source
            into = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns(*ignored), dirs_exist_ok=True)
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)

    def run(self, arguments: str) -> int:
        command = self.faked(arguments)
        if "tools/check_image.py" in command:
            command = command.replace("tools/check_image.py", "tools/check_image.py --python-only")
            self.say("  (--python-only added: the release's own files cannot exist here; the check names them)")
        started = time.monotonic()
        process = subprocess.run(["/bin/sh", "-c", command], env=self.env, cwd=self.cwd, capture_output=True,
                                 text=True)
        for line in _shown(process.stdout + process.stderr):
            self.say(f"    | {line}")
        self.say(f"  exit {process.returncode} after {time.monotonic() - started:.0f} s")
        if not self.seeded and (venv := self.env.get("VIRTUAL_ENV")) and (Path(venv) / "pyvenv.cfg").is_file():
            self.seed(Path(venv))
        return process.returncode

    def seed(self, venv: Path) -> None:
        """Point the new venv at this environment's packages, behind its own site-packages (a .pth file), and at
        metadata-only stand-ins for what this host cannot install: pip installs only what is missing or shadowed."""
        self.seeded = True
        python = venv / "bin" / "python"
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              env={"PATH": self.env["PATH"]}, capture_output=True, text=True, check=True).stdout.strip()
        mine = versions(seed_paths())
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or "no glibc"
        standins = self.standins / "site-packages"
        standins.mkdir(parents=True)
        for requirement in image_requirements(self.checkout):
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", requirement)
            if not match or canonical(match.group(1)) not in STAND_INS or canonical(match.group(1)) in mine:
                continue
            name, version = match.groups()
            info = standins / f"{name.replace('-', '_')}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            (info / "INSTALLER").write_text("yolo11-triton image-build stand-in\n")
            (info / "RECORD").write_text("")
            self.say(f"  STAND-IN {name}=={version}: metadata only, {STAND_INS[canonical(name)].format(glibc=glibc)}")
        (Path(site) / "_image_rehearsal_seed.pth").write_text("\n".join([str(standins), *seed_paths()]) + "\n")
        self.say(f"  SEED {site}/_image_rehearsal_seed.pth: {', '.join(seed_paths())} (after the venv's own "
                 "site-packages; PYTHONPATH still comes first)")


def image_requirements(checkout: Path) -> list[str]:
    """The ``image`` extra of ``checkout``'s pyproject.toml: what ``pip install ".[image]"`` adds."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the installed project's metadata says the same
        marker = re.compile(r"""\s*;\s*extra\s*==\s*["']image["']\s*$""")
        return [marker.sub("", r) for r in metadata.requires("yolo11-triton") or [] if marker.search(r)]
    return tomllib.loads((checkout / "pyproject.toml").read_text())["project"]["optional-dependencies"]["image"]


def rehearse(dockerfile: str, checkout: Path, prepared: Prepared, work: Path | None = None) -> Rehearsal:
    """Run ``dockerfile``'s steps (FROM the pinned release; ENV, WORKDIR, COPY from ``checkout``, RUN) in a fake root
    under ``work`` that holds the release's Python setting: its ENV (``deployment.RELEASE_ENV``) and its DALI
    backend's folder first on PYTHONPATH. apt-get steps are skipped, the image check runs with --python-only. The
    verdict is the build's: the first failing step fails it, with its reason."""
    result = Rehearsal()
    if problem := not_prepared(prepared):
        return Rehearsal(False, problem, [f"image-build: {problem}"])
    owned = work is None
    work = Path(tempfile.mkdtemp(prefix="yolo11-image-build-")) if work is None else work
    try:
        build = _Build(work, checkout, prepared, result)
        result.lines.append(f"image-build: {SERVICE}'s dockerfile_inline, rehearsed in {build.root}, a fake root "
                            "standing for / (its opt/ and tmp/; paths below are the image's)")
        started = time.monotonic()
        for number, (keyword, arguments) in enumerate(dockerfile_instructions(dockerfile), 1):
            build.say(f"step {number}: {keyword} {arguments}")
            if keyword == "FROM":
                if arguments != d.TRITON_IMAGE:
                    return _failed(result, f"FROM {arguments}: the rehearsal stands in for {d.TRITON_IMAGE} only")
                made = stamp(prepared)
                build.say(f"  the release's DALI backend folder {d.DALI_BACKEND_WHEEL_DIR}: {prepared.dali} "
                          f"({made.get('mib')} MiB), made by {' '.join(made.get('ran', []))} (recorded: "
                          f"{' '.join(d.DALI_BACKEND_PIP_INSTALL)}): {_listing(prepared.dali)}")
                for name, value, where in d.RELEASE_ENV:
                    build.set_env([(name, value)], f"release ({where}): ")
            elif keyword == "ENV":
                build.set_env(env_assignments(arguments))
            elif keyword == "WORKDIR":
                build.cwd = Path(build.faked(arguments))
                build.cwd.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                build.copy(arguments)
            elif keyword == "RUN" and "apt-get" in arguments:
                build.say("  SKIPPED: apt-get cannot run here (no root filesystem of the image to install into)")
            elif keyword == "RUN":
                if code := build.run(arguments):
                    problems = [line.split("PROBLEM ", 1)[1] for line in result.lines if "PROBLEM " in line]
                    if any("No matching distribution" in line for line in result.lines):
                        problems.append(f"pip wanted a wheel that neither this environment nor {prepared.wheelhouse} "
                                        "holds: run tools/bootstrap.sh")
                    return _failed(result, f"step {number} (RUN {arguments}) exited {code}"
                                           + (f": {'; '.join(problems)}" if problems else ""))
            else:
                return _failed(result, f"step {number}: the rehearsal does not know {keyword}")
        build.say(f"image-build: every step passed in {time.monotonic() - started:.0f} s")
        return result
    finally:
        result.lines += ["not covered here:"] + [f"  - {line}" for line in not_covered()]
        if owned:
            shutil.rmtree(work, ignore_errors=True)


def not_covered() -> list[str]:
    return [line.format(python=sys.version.split()[0], release_python=d.PYTHON_VERSION) for line in NOT_COVERED]


def _shown(output: str) -> list[str]:
    """A step's output less pip's 'Requirement already satisfied' lines and the build backend's warning blocks
    (setuptools' deprecation notices between '!!' lines), each counted."""
    shown, satisfied, warning, in_block = [], 0, 0, False
    for line in output.splitlines():
        if line.strip() == "!!" or in_block:
            in_block = in_block != (line.strip() == "!!")
            warning += 1
        elif line.startswith("Requirement already satisfied"):
            satisfied += 1
        elif "Warning:" not in line and "corresp(dist" not in line:
            shown.append(line)
        else:
            warning += 1
    if satisfied:
        shown.append(f"({satisfied} lines 'Requirement already satisfied' left out)")
    if warning:
        shown.append(f"({warning} lines of the build backend's warnings left out)")
    return shown


def _listing(folder: Path) -> str:
    return ", ".join(f"{n} {v}" for n, v in sorted(versions([str(folder)]).items()) if n in ("numpy", canonical(
        d.DALI_PACKAGE))) + f" and {len(versions([str(folder)])) - 2} more"


def _failed(result: Rehearsal, reason: str) -> Rehearsal:
    result.ok, result.reason = False, reason
    result.lines.append(f"image-build: FAILED: {reason}")
    return result
