"""Every code block of README.md and docs/*.md runs as written.

- ```python blocks run in order, one page in one subprocess (its blocks share their names), cwd a fresh folder;
- ```console blocks have their ``$ `` commands run there too, in the page's order: ``softgrad`` is
  ``python -m softgrad``, ``python`` and ``.venv/bin/python`` are this interpreter; the lines after a command
  are its sample output and are not compared; ``make TARGET`` lines are not run but must name a target of
  the Makefile;
- an HTML comment right before a block, ``<!-- skip: needs a GPU -->``, skips it with that reason, and
  ``<!-- needs: torch -->`` skips the page where that module is not installed;
- other blocks (```toml, ```text) are shown, not run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python", "console"}
SHOWN = {"toml", "text"}

BLOCK = re.compile(r"(?:<!--\s*(?P<mark>skip|needs):\s*(?P<why>.*?)\s*-->\n)?```(?P<lang>[\w-]*)\n(?P<body>.*?)^```",
                   re.S | re.M)


def blocks(page: Path) -> list[dict]:
    text = page.read_text()
    found = []
    for m in BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("body")) + 1
        found.append({"lang": m["lang"], "body": m["body"], "line": line, "mark": m["mark"], "why": m["why"]})
    return found


def commands(body: str) -> list[str]:
    """The ``$ `` commands of a console block, continuation lines (a trailing backslash) joined."""
    out, current = [], None
    for raw in body.splitlines():
        if current is not None:
            current += "\n" + raw
        elif raw.startswith("$ "):
            current = raw[2:]
        else:
            continue
        if not current.rstrip().endswith("\\"):
            out.append(current)
            current = None
    assert current is None, f"a command ends with a backslash: {current!r}"
    return out


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^([\w .-]+):(?!=)", text, flags=re.M) for t in line.split()}


# The page's driver: runs the blocks in order in this one process, a console command through bash with
# ``softgrad`` and ``python`` on PATH as this interpreter.
DRIVER = r"""
import json, os, subprocess, sys, traceback
steps = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for step in steps:
    where = step["where"]
    if step["kind"] == "python":
        print(f"--- {where}: python", flush=True)
        exec(compile(step["code"], where, "exec"), namespace)
    else:
        print(f"--- {where}: $ {step['code']}", flush=True)
        result = subprocess.run(["bash", "-c", step["code"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        print(result.stdout, flush=True)
        if result.returncode != 0:
            sys.exit(f"{where}: {step['code']!r} exited with status {result.returncode}")
print("--- all blocks ran", flush=True)
"""


def shims(folder: Path) -> Path:
    """``softgrad`` and ``python`` as this interpreter, for the console blocks."""
    folder.mkdir()
    (folder / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (folder / "softgrad").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m softgrad "$@"\n')
    for path in folder.iterdir():
        path.chmod(0o755)
    return folder


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_docs_have_pages_and_the_readme_links_each():
    readme = (ROOT / "README.md").read_text()
    pages = [p for p in PAGES if p.parent.name == "docs"]
    assert len(pages) >= 7
    for page in pages:
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_relative_links_reach_their_files_and_headings():
    def anchor(heading: str) -> str:  # GitHub's: lower case, punctuation dropped, spaces to hyphens
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    for page in [*PAGES, ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target:
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page_id(page)}: {target}"
            if fragment:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), flags=re.M)
                assert fragment in {anchor(h) for h in headings}, f"{page_id(page)}: {target}"


def test_every_block_is_runnable_or_shown():
    for page in PAGES:
        for block in blocks(page):
            assert block["lang"] in RUNNABLE | SHOWN, f"{page_id(page)}:{block['line']}: ```{block['lang']}"
            if block["mark"] == "skip":
                assert block["why"], f"{page_id(page)}:{block['line']}: a skip says why"


def test_the_quick_start_is_in_the_first_40_lines():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    for command in ("softgrad train", "softgrad evaluate", "softgrad predict", "pip install"):
        assert command in head, command


def test_make_lines_name_makefile_targets():
    targets = make_targets()
    assert {"test", "bench"} <= targets
    seen = 0
    for page in PAGES:
        for block in blocks(page):
            if block["lang"] != "console":
                continue
            for command in commands(block["body"]):
                words = shlex.split(command, comments=True)
                if words and words[0] == "make":
                    seen += 1
                    named = [w for w in words[1:] if "=" not in w and not w.startswith("-")] or ["all"]
                    assert set(named) <= targets, f"{page_id(page)}:{block['line']}: {command}"
    assert seen >= 2


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_the_code_blocks_run(page, tmp_path):
    steps, skipped = [], []
    for block in blocks(page):
        where = f"{page_id(page)}:{block['line']}"
        if block["lang"] not in RUNNABLE:
            continue
        if block["mark"] == "skip":
            skipped.append(f"{where} ({block['why']})")
            continue
        if block["mark"] == "needs":
            for module in block["why"].replace(",", " ").split():
                if importlib.util.find_spec(module) is None:
                    pytest.skip(f"{where} needs {module}")
        if block["lang"] == "python":
            steps.append({"kind": "python", "where": where, "code": block["body"]})
        for command in commands(block["body"]) if block["lang"] == "console" else []:
            words = shlex.split(command, comments=True)
            if not words or words[0] == "make":
                continue  # checked against the Makefile above
            if words[0] == ".venv/bin/python":
                command = "python" + command.split(".venv/bin/python", 1)[1]
            steps.append({"kind": "console", "where": where, "code": command})
    if page.name == "extending.md":
        pytest.importorskip("torch", reason="the check of docs/extending.md's examples compares with torch")
        steps.append({"kind": "python", "where": "tests/test_docs.py: CHECK_THE_EXAMPLES", "code": CHECK_THE_EXAMPLES})
    if not steps:
        pytest.skip("no block runs here: " + ", ".join(skipped) if skipped else "nothing to run here")
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    (tmp_path / "driver.py").write_text(DRIVER)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTGRAD_", "PYTEST_"))}
    env.update(PATH=f"{shims(tmp_path / 'bin')}{os.pathsep}{env.get('PATH', '')}",
               SOFTGRAD_CACHE=str(tmp_path / "cache"), SOFTGRAD_DATA=str(tmp_path / "data"),
               MPLBACKEND="Agg", COLUMNS="100")
    result = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "steps.json")],
                            cwd=work, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert result.stdout.rstrip().endswith("--- all blocks ran")


# run after docs/extending.md's examples: the example loss's gradient against autograd, the example
# optimizer against its rule, on every CPU backend and the example backend
CHECK_THE_EXAMPLES = """
import numpy as np
import torch
from softgrad import get_backend
from softgrad.numerics.methods import method_of

rng = np.random.default_rng(0)
z, y = rng.standard_normal((16, 5)) * 3, rng.integers(0, 5, 16)
zt = torch.tensor(z, requires_grad=True)
p = torch.softmax(zt, dim=1)
expected = ((p - torch.nn.functional.one_hot(torch.tensor(y), 5)) ** 2).sum(dim=1).mean()
(autograd,) = torch.autograd.grad(expected, zt)
for name in ("numpy", "torch", "array-api-strict", "mine"):
    be = get_backend(name)
    loss, grad = method_of(be, "brier_and_grad")(be.asarray(z), be.asarray(y))
    np.testing.assert_allclose(be.to_numpy(loss), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(be.to_numpy(grad), autograd.numpy(), rtol=1e-10, atol=1e-14)
    params, state = method_of(be, "signum_step")([be.asarray(np.ones(3))], [be.asarray(np.array([1.0, -2.0, 0.0]))],
                                                 method_of(be, "signum_init")(None), lr=0.5, beta=0.9)
    np.testing.assert_array_equal(be.to_numpy(params[0]), [0.5, 1.5, 1.0])
"""
