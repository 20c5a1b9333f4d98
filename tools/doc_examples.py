"""Run the manual's examples from a fresh shell and compare (or rewrite) their printed output.

Every fenced block in ``docs/*.md`` whose first line starts with ``$ `` is an example: each
``$ command`` runs in ``bash`` in order, in a scratch home folder of its own page (``~``), with
only the project's ``.venv/bin`` before the system's PATH and ``~/loop-farm`` linking to the
project. What a command prints (stdout and stderr, as a terminal shows them) must be what the
page prints under it, once the parts that change from run to run (batch ids, times, process ids)
are masked, and a line ``...`` in the printed output stands for lines left out. A heredoc
(``$ python - <<'EOF'``) runs with its lines.

Two comments steer a page:

* ``<!-- doc-examples: skip REASON -->`` just above a block: not run (a server that runs until
  Ctrl-C, a REAPER that is not installed here), with the reason said;
* ``<!-- doc-examples: run`` ... ``-->``: commands run silently before the next block (writing
  the broken file an error example reads, say).

    .venv/bin/python tools/doc_examples.py                  # check every page
    .venv/bin/python tools/doc_examples.py docs/patches.md  # one page
    .venv/bin/python tools/doc_examples.py --update         # write the real output into the pages
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = re.compile(r"^<!-- doc-examples: skip (.+?) -->$")
RUN_START = "<!-- doc-examples: run"
VOLATILE = [  # what differs from one run to the next, masked before comparing
    (re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b"), "<batch>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z?\b"), "<time>"),
    (re.compile(r"\bin \d+(?:\.\d+)? s\b"), "in <s> s"),
    (re.compile(r"\b(worker|pid|process) \d+\b"), r"\1 <pid>"),
    (re.compile(r"\d+(?:\.\d+)? ?(ms|s)/loop"), r"<n> \1/loop"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"[ \t]+$", re.M), ""),
]


@dataclass
class Example:
    page: Path
    line: int  # 1-based line of the opening fence
    commands: list[tuple[str, list[str]]]  # (command, expected output lines)
    setup: list[str] = field(default_factory=list)
    skip: str | None = None
    end: int = 0  # line of the closing fence


def parse(page: Path) -> list[Example]:
    lines = page.read_text().splitlines()
    examples, pending_setup, pending_skip = [], [], None
    i = 0
    while i < len(lines):
        line = lines[i]
        if SKIP.match(line.strip()):
            pending_skip = SKIP.match(line.strip()).group(1)
        elif line.strip() == RUN_START:
            i += 1
            while lines[i].strip() != "-->":
                pending_setup.append(lines[i])
                i += 1
        elif line.startswith("```"):
            start = i
            i += 1
            body = []
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if body and body[0].startswith("$ "):
                examples.append(Example(page, start + 1, _commands(body), pending_setup, pending_skip, i + 1))
            pending_setup, pending_skip = [], None
        i += 1
    return examples


def _commands(body: list[str]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(body):
        command = body[i][2:]
        i += 1
        heredoc = re.search(r"<<-?'?(\w+)'?", command)
        if heredoc:  # the heredoc's lines belong to the command
            while i < len(body):
                command += "\n" + body[i]
                i += 1
                if body[i - 1].strip() == heredoc.group(1):
                    break
        expected = []
        while i < len(body) and not body[i].startswith("$ "):
            expected.append(body[i])
            i += 1
        out.append((command, expected))
    return out


def fresh_home(page: Path) -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"doc-{page.stem}-"))
    (home / "loop-farm").symlink_to(ROOT)
    return home


def shell(command: str, home: Path, timeout: float = 600.0) -> str:
    env = {"PATH": f"{ROOT / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "LANG": "C.UTF-8", "XDG_STATE_HOME": str(home / ".local" / "state"), "TERM": "dumb"}
    result = subprocess.run(["bash", "-c", command], cwd=home, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return result.stdout.replace(str(home), "~").replace(str(ROOT), "~/loop-farm")


def matches(expected: list[str], got: list[str]) -> bool:
    """``got`` is what ``expected`` shows, where a line ``...`` stands for any lines left out."""
    if not expected:
        return not got
    if expected[0].strip() == "...":
        return any(matches(expected[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and got[0] == expected[0] and matches(expected[1:], got[1:])


def mask(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text.rstrip("\n")


def run_page(page: Path, update: bool) -> list[str]:
    """Run a page's examples; return its differences (and rewrite the page when ``update``)."""
    problems, replacements = [], []
    home = fresh_home(page)
    try:
        for example in parse(page):
            if example.skip:
                print(f"{page.relative_to(ROOT)}:{example.line}: skipped ({example.skip})")
                continue
            for command in example.setup:
                shell(command, home)
            block = []
            for command, expected in example.commands:
                got = shell(command, home).rstrip("\n")
                block.append(f"$ {command}")
                same = matches(mask("\n".join(expected)).splitlines(), mask(got).splitlines())
                block += expected if same else got.splitlines()  # an abridged output that still holds stays
                if not same:
                    problems.append(f"{page.relative_to(ROOT)}:{example.line}: $ {command.splitlines()[0]}\n"
                                    f"  printed:\n    " + "\n    ".join(expected) +
                                    "\n  now:\n    " + "\n    ".join(got.splitlines()))
            replacements.append((example.line, example.end, block))
    finally:
        # an example may have made a folder immutable (chattr +i): undo that before removing
        subprocess.run(["chattr", "-R", "-i", str(home)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)
    if update and replacements:
        lines = page.read_text().splitlines()
        for start, end, block in reversed(replacements):
            lines[start:end - 1] = block
        page.write_text("\n".join(lines) + "\n")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", type=Path)
    ap.add_argument("--update", action="store_true", help="write each command's real output into its page")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="pages run at once")
    args = ap.parse_args(argv)
    pages = [p.resolve() for p in args.pages] or sorted((ROOT / "docs").glob("*.md"))
    # pages share nothing (each has its own scratch home): two at a time, the longest first
    pages.sort(key=lambda page: -len(parse(page)))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        problems = [p for found in pool.map(lambda page: run_page(page, args.update), pages) for p in found]
    for problem in problems:
        print(problem)
    if problems and not args.update:
        print(f"{len(problems)} example(s) print something else now", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
