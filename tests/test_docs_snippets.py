"""Every fenced bash/sh/python block in README.md and docs/*.md runs as pasted after `make demo`.

Blocks run in order, page by page, each page in its own folder that looks like a fresh
clone after `make demo` (the repository's top-level entries are linked into it, so
`.venv/bin/...`, `demo-out/`, `examples/` and `python -m benchmarks.NAME` resolve as in the
clone, while the files a snippet writes stay out of the repository). A bash block runs
under `bash -e -o pipefail`, a python block is fed to `.venv/bin/python`; each must exit 0
and print what it did.

A block is not run only when its info string says why, with a reason named in NO_RUN
(```` ```bash no-run=benchmark ````); a block tagged `slow` runs, marked slow. Blocks that
are not run are still checked: every script or `python -m benchmarks.NAME` they name
exists and knows the options they pass it. Every `demo-out/...` file named anywhere in
README and docs must be one the demo writes, and every relative link must resolve.

If the repository has no demo-out/, the module fixture runs the demo into it once, as
`make demo` does (about a minute). A demo-out/ left by an older checkout is reused:
rerun `make demo` if these tests say its files do not load.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LANGUAGES = {"bash", "sh", "python"}

# Why a block is not run; a block's `no-run=KEY` must name one of these.
NO_RUN = {
    "setup": "`make demo` and `make test` themselves: the fixture below runs the demo, and the "
             "suite cannot run itself",
    "benchmark": "reproduces a published figure: minutes to hours of CPU each; every benchmark's "
                 "--quick form runs in tests/test_benchmarks_smoke.py",
    "long": "a full training run of an example (minutes); the same scripts run with --quick in "
            "tests/test_images_examples.py and tests/test_translation_benchmark.py",
    "device": "runs on a Raspberry Pi (or builds the wheel for one), not on this host",
    "root": "needs root and installs packages (qemu, mmdebstrap); tests/test_arm.py runs these "
            "checks under ZOR_ARM's rules",
}
TAGS = {"slow"}
BLOCK_TIMEOUT = 300

FENCE = re.compile(r"^```([A-Za-z]+)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
DEMO_PATH = re.compile(r"demo-out/[\w./-]*\w")
SCRIPT = re.compile(r"(?:-m\s+(benchmarks\.\w+)|((?:examples|benchmarks)/[\w/]+\.(?:py|sh)))")


class Block:
    def __init__(self, page: Path, index: int, language: str, info: str, code: str, line: int):
        self.page, self.index, self.language, self.code, self.line = page, index, language, code, line
        words = info.split()
        self.no_run = next((w.split("=", 1)[1] for w in words if w.startswith("no-run=")), None)
        self.tags = {w for w in words if not w.startswith("no-run=")}

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for k, m in enumerate(FENCE.finditer(text)):
        if m.group(1) in LANGUAGES:
            line = text.count("\n", 0, m.start()) + 1
            found.append(Block(page, k, m.group(1), m.group(2), m.group(3), line))
    return found


ALL = [b for page in PAGES for b in blocks(page)]
RUN = [b for b in ALL if b.no_run is None]


def test_pages_have_blocks_and_every_tag_is_known():
    assert (ROOT / "README.md").is_file() and len(PAGES) >= 8, [p.name for p in PAGES]
    assert RUN, "no runnable block found: the fence pattern no longer matches the pages"
    for b in ALL:
        assert b.no_run is None or b.no_run in NO_RUN, (
            f"{b.name}: no-run={b.no_run} names no reason in NO_RUN: say in this test why it is not run")
        assert b.tags <= TAGS, f"{b.name}: unknown info-string words {sorted(b.tags - TAGS)}"


def test_readme_opens_with_the_two_commands_and_stays_short():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = blocks(ROOT / "README.md")[0]
    assert [line.split("#")[0].strip() for line in first.code.strip().splitlines()] == ["make demo", "make test"]
    assert text.index("```") < text.index("\n## "), "the two commands come before any section"
    assert len(text.encode("utf-8")) <= 10_500, "README.md is meant to stay near 10 KB: figures go to docs/"


@pytest.mark.parametrize("block", [b for b in ALL if b.no_run], ids=lambda b: b.name)
def test_blocks_not_run_name_real_scripts_and_options(block):
    """What is not run is still checked: the scripts exist and declare the options passed."""
    for line in block.code.replace("\\\n", " ").splitlines():
        m = SCRIPT.search(line)
        if not m:
            continue
        path = ROOT / (m.group(1).replace(".", "/") + ".py" if m.group(1) else m.group(2))
        assert path.is_file(), f"{block.name}: {path.relative_to(ROOT)} does not exist"
        sources = path.read_text(encoding="utf-8") + (ROOT / "benchmarks" / "common.py").read_text(encoding="utf-8")
        for word in shlex.split(line.split("#")[0]):
            option = word.split("=")[0]
            if option.startswith("--"):
                assert re.search(rf"[\"' ]{re.escape(option)}\b", sources), (
                    f"{block.name}: {path.relative_to(ROOT)} has no option {option}")


def test_every_demo_file_named_is_one_the_demo_writes(demo_out):
    for page in PAGES:
        for name in sorted(set(DEMO_PATH.findall(page.read_text(encoding="utf-8")))):
            assert (ROOT / name).exists(), f"{page.relative_to(ROOT)} names {name}, which `make demo` does not write"


def test_relative_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path = (page.parent / target).resolve()
            if path == (ROOT / "docs" / "notes").resolve() and not path.exists():
                continue    # docs/notes/ receives the text moved out of docstrings in its own change
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


@pytest.fixture(scope="module")
def demo_out():
    """The repository's demo-out/, made as `make demo` makes it when any file the pages use is missing."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv in the repository: the snippets name .venv/bin/...; run `make demo` first")
    needed = {n for b in RUN for n in DEMO_PATH.findall(b.code)}
    if any(not (ROOT / n).exists() for n in needed):
        subprocess.run([str(python), "examples/demo.py", "--out", "demo-out", "--tour"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, timeout=900)
    return ROOT / "demo-out"


@pytest.fixture(scope="module")
def workspaces(demo_out, tmp_path_factory):
    """One folder per page, holding links to the repository's top-level entries."""
    made = {}

    def get(page: Path) -> Path:
        if page not in made:
            work = tmp_path_factory.mktemp(page.stem)
            for entry in ROOT.iterdir():
                if entry.name != ".git":
                    (work / entry.name).symlink_to(entry)
            made[page] = work
        return made[page]

    return get


@pytest.mark.parametrize("block", [pytest.param(b, id=b.name, marks=[pytest.mark.slow] if "slow" in b.tags else [])
                                   for b in RUN])
def test_snippet_runs_as_pasted(block, workspaces):
    work = workspaces(block.page)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if block.language == "python":
        cmd, stdin = [str(work / ".venv" / "bin" / "python"), "-"], block.code
    else:
        cmd, stdin = ["bash", "-e", "-o", "pipefail", "-c", block.code], None
    res = subprocess.run(cmd, cwd=work, input=stdin, capture_output=True, text=True, env=env, check=False,
                         timeout=BLOCK_TIMEOUT)
    shown = f"\n--- block ---\n{block.code}\n--- stdout ---\n{res.stdout[-3000:]}\n--- stderr ---\n{res.stderr[-3000:]}"
    assert res.returncode == 0, f"{block.name} exited {res.returncode}{shown}"
    assert (res.stdout + res.stderr).strip(), f"{block.name} ran but printed nothing: it must say what it did{shown}"
    print(f"{block.name}: ok", file=sys.stderr)
