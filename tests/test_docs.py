"""The documentation stands alone: its links resolve, its figures have result files, it speaks to users.

Fast and free of TensorFlow: these tests only read text files of the repository.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE = ROOT / "docs" / "PERFORMANCE.md"
CONTRACT = ROOT / "docs" / "CONTRACT.md"
RESULTS = ROOT / "bench" / "results"

# Top-level entries a backticked path may start with to count as a path into the repository.
REPO_TOP = ("bench", "docs", "conf", "ptycho_exp", "tests", "scripts", ".ci")
REPO_FILES = ("README.md", "Makefile", "pyproject.toml")
# Characters that make a backticked token a pattern or a placeholder rather than one path.
PLACEHOLDER = re.compile(r"[*?<>{}$|\[\]]|\.\.\.|…")

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
BACKTICKED = re.compile(r"`([^`\s]+)`")
RESULT_CITE = re.compile(r"bench/results/[A-Za-z0-9_.-]+\.json")

HISTORY_PATTERNS = {
    "session": re.compile(r"\bsessions?\b", re.I),
    "numbered round": re.compile(r"\bround \d", re.I),
    "ordinal session": re.compile(
        r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth) session", re.I),
    "before this fix": re.compile(r"before this fix", re.I),
}
# Identifiers that contain the word legitimately (process groups, Keras state).
HISTORY_ALLOWED = re.compile(r"start_new_session|clear_session", re.I)
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".json", ".txt", ".cfg", ".toml", ".sh"}


def user_docs() -> list[Path]:
    """README.md, every Markdown file under docs/ and bench/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md")), *sorted((ROOT / "bench").glob("**/*.md"))]


def prose(text: str) -> str:
    """Markdown text without its fenced code blocks (shell examples hold paths made at run time)."""
    return FENCE.sub("", text)


def link_targets(text: str) -> list[str]:
    """Relative targets of Markdown links (web addresses and in-page anchors left out), anchors stripped."""
    out = []
    for target in MD_LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def repo_paths(text: str) -> list[str]:
    """Backticked tokens that name one path in the repository, e.g. `bench/results/cache.json`."""
    out = []
    for token in BACKTICKED.findall(prose(text)):
        token = token.rstrip(".,;:")
        if PLACEHOLDER.search(token):
            continue
        head = token.split("/", 1)[0]
        if (head in REPO_TOP and "/" in token) or token in REPO_FILES:
            out.append(token)
    return out


def git_ignored(path: Path) -> bool:
    """True when git ignores ``path`` (a file users or runs create, e.g. conf/local/default.yaml)."""
    real = Path(path).resolve()
    try:
        rel = real.relative_to(ROOT)
    except ValueError:
        return False
    try:
        done = subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def inside_repo(path: Path) -> bool:
    try:
        path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("doc", user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc):
    broken = []
    for target in link_targets(doc.read_text(encoding="utf-8")):
        path = (doc.parent / target)
        if not target or not inside_repo(path) or not path.exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: links that do not resolve inside the repository: {broken}"


@pytest.mark.parametrize("doc", user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_backticked_repository_path_exists(doc):
    missing = [p for p in repo_paths(doc.read_text(encoding="utf-8"))
               if not (ROOT / p).exists() and not git_ignored(ROOT / p)]
    assert not missing, f"{doc.relative_to(ROOT)}: paths that do not exist in the repository: {missing}"


def test_link_and_path_extraction_sees_what_it_must():
    """The checks above would be empty promises if the extraction missed links or paths."""
    text = ("See [the contract](CONTRACT.md#5-models), [web](https://example.org), [here](#top), "
            "`bench/results/cache.json`, `bench/results/*.json`, `ptycho_exp/conf/local/<name>.yaml`, "
            "`model=pinn`, `data/`.\n```bash\npython bench/nothing.py `docs/not_here.md`\n```\n")
    assert link_targets(text) == ["CONTRACT.md"]
    assert repo_paths(text) == ["bench/results/cache.json"]


def history_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in ("docs", "bench", "ptycho_exp/conf"):
        files += [p for p in sorted((ROOT / folder).rglob("*"))
                  if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return files


def history_hits(text: str) -> list[str]:
    """Phrases of development history in ``text`` (identifiers such as clear_session left out)."""
    cleaned = HISTORY_ALLOWED.sub("", text)
    return [f"{name}: {m.group(0)!r}" for name, rx in HISTORY_PATTERNS.items() for m in rx.finditer(cleaned)]


def test_history_patterns_catch_diary_wording_and_spare_identifiers():
    assert history_hits("Fifth session: more steps") and history_hits("in round 3 we") \
        and history_hits("before this fix it read") and history_hits("the sessions of May")
    assert not history_hits("subprocess.Popen(start_new_session=True); keras.backend.clear_session()")


def test_user_facing_text_holds_no_development_history():
    hits = {}
    for path in history_files():
        found = history_hits(path.read_text(encoding="utf-8", errors="replace"))
        if found:
            hits[str(path.relative_to(ROOT))] = found
    assert not hits, f"development-history wording (docs speak to users and maintainers): {hits}"


def cited_results() -> set[str]:
    return set(RESULT_CITE.findall(PERFORMANCE.read_text(encoding="utf-8")))


def test_every_committed_result_backs_a_figure_in_performance_md():
    committed = {f"bench/results/{p.name}" for p in RESULTS.glob("*.json")}
    assert committed, "bench/results holds no result files"
    orphans = sorted(committed - cited_results())
    assert not orphans, f"result files that docs/PERFORMANCE.md does not cite (remove them or cite them): {orphans}"


def test_every_result_cited_in_performance_md_exists():
    cited = cited_results()
    assert cited, "docs/PERFORMANCE.md cites no result file"
    missing = sorted(c for c in cited if not (ROOT / c).is_file())
    assert not missing, f"docs/PERFORMANCE.md cites result files that are not committed: {missing}"


def contract_sections() -> set[int]:
    return {int(n) for n in re.findall(r"^## (\d+)\. ", CONTRACT.read_text(encoding="utf-8"), re.M)}


def test_contract_keeps_the_eight_numbered_sections():
    assert contract_sections() == set(range(1, 9))


def test_every_contract_section_cited_exists():
    cite = re.compile(r"CONTRACT(?:\.md)? §(\d+)")
    sections = contract_sections()
    bad = {}
    for folder in ("ptycho_exp", "bench", "tests", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".md", ".yaml"}:
                nums = {int(n) for n in cite.findall(path.read_text(encoding="utf-8", errors="replace"))}
                if nums - sections:
                    bad[str(path.relative_to(ROOT))] = sorted(nums - sections)
    assert not bad, f"citations of sections docs/CONTRACT.md does not have: {bad}"
