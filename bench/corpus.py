"""Deterministic benchmark corpus: N plain-text articles in the shared article format.

Each file is about 5 KB: headline, byline, lower-case topic line, a body of
paragraphs with typographic quotes and apostrophes, Title Case sub-headings and
bullet lists, and a closing bio of one of ~50 fixed authors. Topic lines name
broad topics ("ukraine", "nato") that the body writes as proper nouns, so the
parser finds them without configuration; stories share topic lines. About 1 in
200 files has a front-matter block, a few use CRLF, a BOM or a "By" byline,
and one in ten sits in a sub-folder. Same seed and N, same bytes and mtimes.

    python bench/corpus.py 10000                 # writes bench/corpus-10000/
    python bench/corpus.py 1000 --out /tmp/c --check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
GENERATOR_VERSION = 1
MARKER = ".corpus.json"  # hidden, so feedsvc ignores it
NEWEST_MTIME = 1_780_000_000  # 2026-05-28: every file is in the past
SPAN_SECONDS = 3 * 365 * 86400  # mtimes spread over three years
SUBFOLDERS = ("science", "world", "business")

BROAD = (
    "Ukraine", "NATO", "China", "Russia", "India", "Brazil", "Japan", "Germany", "France",
    "Europe", "Africa", "Mexico", "Canada", "Australia", "Iran", "Israel", "Taiwan", "Korea",
    "Egypt", "Nigeria", "Kenya", "Argentina", "Chile", "Arctic", "Antarctica", "NASA", "ITER",
    "Tesla", "Boeing", "Airbus", "Nvidia", "Google", "Microsoft", "Amazon", "Bitcoin", "OPEC",
    "IMF", "FIFA", "UNESCO", "Mars",
)  # fmt: skip
COMMON = (
    "talks", "election", "budget", "drought", "strike", "summit", "launch", "merger", "tariffs",
    "vaccine", "rollout", "reform", "protests", "ceasefire", "earnings", "inflation", "floods",
    "wildfires", "mission", "satellite", "trial", "sanctions", "deal", "growth", "outlook",
    "ruling", "probe", "recall", "upgrade", "pipeline", "harvest", "exports", "subsidies",
    "treaty", "reactor", "railway", "heatwave", "shortage", "recovery", "auction",
)  # fmt: skip
FIRST = (
    "Sara", "John", "Ingrid", "Marcus", "Amina", "Diego", "Priya", "Tomás", "Yuki", "Lena",
    "Kwame", "Elena", "Rafael", "Chloé", "Omar", "Hannah", "Jonas", "Mei", "Farid", "Zoë",
    "Lucas", "Anya", "Tariq", "Nora", "Mateo", "Ines", "Kofi", "Astrid", "Luca", "Selin",
    "Pavel", "Maya", "Ethan", "Leila", "Bruno", "Freya", "Arjun", "Camille", "Hugo", "Nadia",
    "Oskar", "Fatima", "Ivan", "Clara", "Sven", "Rosa", "Daniel", "Aiko", "Samuel", "Mira",
)  # fmt: skip
LAST = (
    "Wazowski", "Doe", "Halvorsen", "Bellamy", "Okafor", "Fernández", "Raman", "Oliveira",
    "Tanaka", "Becker", "Mensah", "Petrova", "Duarte", "Laurent", "Haddad", "Fischer", "Berg",
    "Chen", "Karimi", "Novak", "Moreau", "Sokolova", "Aziz", "Lindqvist", "Rossi", "García",
    "Boateng", "Nilsson", "Bianchi", "Yılmaz", "Horák", "Kapoor", "O’Brien", "Rahimi",
    "Costa", "Sørensen", "Mehta", "Dubois", "Lefèvre", "Hassan", "Eriksson", "Benali",
    "Volkov", "Schmidt", "Holm", "Navarro", "Cohen", "Sato", "Adeyemi", "Weiss",
)  # fmt: skip
BIO_TAILS = (
    "pursued a passion for art at the School of Visual Arts before turning to reporting.",
    "covered city hall for a decade and now writes about energy and climate.",
    "studied economics in Lisbon and has reported from four continents.",
    "spent years as a radio producer and still prefers interviews in person.",
    "grew up on a farm, trained as an engineer and writes about infrastructure.",
    "joined the newsroom after a career in public health research.",
    "writes about science and space, and teaches a night class in astronomy.",
    "has reported on elections in more than twenty countries.",
)
SUBJECTS = (
    "Officials in {P}", "Analysts who follow {P}", "Several lawmakers", "The government",
    "Residents near the border", "Investors", "A spokesperson for {P}", "Engineers",
    "Diplomats from {P}", "Local leaders", "Critics of the {w}", "Supporters of the {w}",
    "Economists", "Researchers studying {P}", "Negotiators", "Executives at {P}",
)  # fmt: skip
VERBS = (
    "said", "warned", "argued", "acknowledged", "insisted", "suggested", "noted",
    "cautioned", "confirmed", "reported",
)  # fmt: skip
CLAUSES = (
    "that the {w} would take years to settle",
    "that talks with {P} had reached a delicate stage",
    "that the plan’s costs were far higher than expected",
    "that the {w} could reshape relations with {P}",
    "that nobody expected the {w} to move this quickly",
    "that the region’s economy depends on what {P} decides next",
    "that the outcome would be known only after the {w}",
    "that the agreement leaves questions about the {w} unanswered",
    "that the data from {P} pointed to a slow recovery",
    "that the {w} was the most serious in a generation",
    "that people in {P} had waited long enough",
    "that it’s too early to judge the {w}",
)  # fmt: skip
TAILS = (
    "", "", " on Tuesday", " in a statement", " after a closed meeting",
    ", citing internal estimates", " during a visit to {P}", ", according to people briefed on it",
)  # fmt: skip
QUOTES = (
    "“We have never seen anything like this {w},” said a senior adviser in {P}.",
    "“It’s a turning point, and everyone knows it,” one negotiator said of the {w}.",
    "“Nobody in {P} wants to be the last to move,” an economist said.",
    "“The numbers don’t lie: the {w} is real,” a researcher who studies {P} said.",
    "“We’ll judge this by what happens on the ground,” a diplomat from {P} said.",
)
HEADINGS = (
    "Why This Matters Now", "What Comes Next", "Reactions From Allies And Opponents",
    "Background: A Long Road", "The Numbers Behind It", "Effects Beyond The Region",
    "A Divided Response", "Questions That Remain", "How It Works", "Years Of Delays",
    "Markets Take Note", "The View From The Ground",
)  # fmt: skip
LIST_INTROS = (
    "Officials pointed to several factors:", "The proposal could include:",
    "Analysts listed the main risks:", "Among the measures under discussion:",
)
ITEMS = (
    "Stable funding for the {w} over several years.", "Closer cooperation with {P}.",
    "An independent review of the {w} within six months.", "Higher spending on the {w}.",
    "Joint production with partners in {P}.", "New rules on the {w} before the winter.",
    "Faster permits for projects linked to the {w}.", "Regular reports to parliament.",
)  # fmt: skip
HEADLINES = (
    "{P} Weighs {W} As Pressure Builds", "{P} Unveils Plan For {W}",
    "{W} In {P} Draws Record Attention", "{P} And {Q} Trade Blame Over {W}",
    "Inside The {W} That Could Reshape {P}", "{P} Signals Shift On {W}",
    "What The {W} Means For {P}", "{P} Delays {W} Amid Rising Costs",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Person:
    """One of the fixed authors."""

    name: str
    bio: str


def authors() -> tuple[Person, ...]:
    """The ~50 fixed authors; each bio starts with the first name, as the format says."""
    return tuple(
        Person(f"{first} {last}", f"{first} {BIO_TAILS[i % len(BIO_TAILS)]}")
        for i, (first, last) in enumerate(zip(FIRST, LAST, strict=True))
    )


def story_lines(rng: random.Random, n: int) -> list[tuple[tuple[str, ...], str]]:
    """Shared topic lines: (broad topics, line), about four articles per story."""
    stories = []
    for _ in range(max(20, n // 4)):
        broad = tuple(rng.sample(BROAD, rng.choice((1, 1, 2))))
        words = [b.lower() for b in broad] + rng.sample(COMMON, rng.randint(2, 3))
        stories.append((broad, " ".join(words)))
    return stories


class _Writer:
    """Builds one article's text from the seeded generator."""

    def __init__(self, rng: random.Random, broad: tuple[str, ...], words: list[str]) -> None:
        self.rng = rng
        self.broad = broad
        self.words = words

    def fill(self, template: str) -> str:
        rng = self.rng
        return template.format(
            P=rng.choice(self.broad),
            Q=rng.choice(BROAD),
            w=rng.choice(self.words),
            W=rng.choice(self.words).capitalize(),
        )

    def sentence(self) -> str:
        rng = self.rng
        text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(CLAUSES)}"
        return self.fill(text + rng.choice(TAILS) + ".")

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(2, 4)))

    def body(self, target: int) -> list[str]:
        rng = self.rng
        blocks = [self.paragraph(), self.paragraph(), self.fill(rng.choice(QUOTES))]
        size = sum(map(len, blocks))
        headings = rng.sample(HEADINGS, len(HEADINGS))
        while size < target:
            section = [headings.pop() if headings else rng.choice(HEADINGS)]
            section += [self.paragraph() for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.4:
                items = rng.sample(ITEMS, rng.randint(3, 5))
                bullets = "\n".join(f"  • {self.fill(item)}" for item in items)
                section.append(f"{self.fill(rng.choice(LIST_INTROS))}\n{bullets}")
            if rng.random() < 0.3:
                section.append(self.fill(rng.choice(QUOTES)))
            blocks += section
            size += sum(map(len, section))
        return blocks


def article_text(rng: random.Random, index: int, stories: list, people: tuple) -> str:
    """The text of article ``index``: header, body, bio; sometimes front matter."""
    broad, line = rng.choice(stories)
    words = [w for w in line.split() if w not in {b.lower() for b in broad}]
    writer = _Writer(rng, broad, words)
    headline = writer.fill(rng.choice(HEADLINES))
    author = rng.choice(people)
    byline = author.name
    if rng.random() < 0.03:
        second = rng.choice(people)
        if second is not author:
            byline = f"{author.name} and {second.name}"
    if rng.random() < 0.05:
        byline = "By " + byline
    parts = [headline, "", byline, line, ""]
    parts.append("\n\n".join(writer.body(rng.randint(3700, 4700))))
    parts += ["", author.bio]
    text = "\n".join(parts)
    if index % 200 == 7:
        day = 1 + index % 28
        text = (
            f"---\ndate: 2025-{1 + index % 12:02d}-{day:02d} 09:30 +01:00\n"
            f"topics: world, security\nsummary: An editor’s summary of article {index}.\n"
            f"---\n{text}"
        )
    return text


def encode(rng: random.Random, text: str) -> bytes:
    """UTF-8 bytes; a few files get CRLF line ends, a BOM or no final newline."""
    roll = rng.random()
    if roll < 0.01:
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8")
    if 0.01 <= roll < 0.015:
        data = b"\xef\xbb\xbf" + data
    return data if rng.random() < 0.5 else data + b"\n"


def generate(n: int, out: Path, seed: int = 20261128) -> Path:
    """Write ``n`` articles to ``out`` (replacing it), unless it already holds them."""
    want = {"n": n, "seed": seed, "version": GENERATOR_VERSION}
    marker = out / MARKER
    if marker.exists() and json.loads(marker.read_text()) == want:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for folder in SUBFOLDERS:
        (out / folder).mkdir()
    rng = random.Random(seed)
    people = authors()
    stories = story_lines(rng, n)
    step = SPAN_SECONDS / n
    for index in range(n):
        data = encode(rng, article_text(rng, index, stories, people))
        name = f"{index:06d}_{hashlib.blake2b(data, digest_size=8).hexdigest()}.txt"
        folder = SUBFOLDERS[index % 3] if index % 10 == 3 else ""
        path = out / folder / name
        path.write_bytes(data)
        mtime = int(NEWEST_MTIME - (n - 1 - index) * step)
        os.utime(path, (mtime, mtime))
    marker.write_text(json.dumps(want))
    return out


def files_of(root: Path) -> list[Path]:
    """Every article file under ``root`` (hidden files such as the marker left out)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def check(root: Path) -> dict[str, float]:
    """Parse every file with feedsvc's parser; raise if any is rejected or lacks a part."""
    from feedsvc.errors import ArticleError
    from feedsvc.parser import parse_article

    stats = {"files": 0, "bytes": 0, "bios": 0, "broad_topics": 0, "front_matter": 0}
    problems: list[str] = []
    for path in files_of(root):
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        try:
            article = parse_article(data, rel)
        except ArticleError as exc:
            problems.append(str(exc))
            continue
        stats["files"] += 1
        stats["bytes"] += len(data)
        stats["bios"] += any(a.bio for a in article.authors)
        stats["broad_topics"] += sum(t.kind == "broad" for t in article.topics)
        stats["front_matter"] += article.front_matter.date is not None
        if not article.authors or not article.topic_line or article.warnings:
            problems.append(f"{rel}: authors/topic line missing or warnings {article.warnings}")
    if problems:
        raise SystemExit(f"{len(problems)} problem(s), e.g.:\n" + "\n".join(problems[:10]))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of articles (1000, 10000, 100000)")
    parser.add_argument("--out", type=Path, help="folder (default bench/corpus-N/)")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--check", action="store_true", help="parse every file with feedsvc")
    args = parser.parse_args()
    out = args.out or BENCH / f"corpus-{args.n}"
    started = time.perf_counter()
    generate(args.n, out, args.seed)
    print(f"{args.n} articles in {out} ({time.perf_counter() - started:.1f} s)")
    if args.check:
        stats = check(out)
        print(
            f"checked: {stats['files']} parsed, 0 rejected, {stats['bytes'] / stats['files']:.0f}"
            f" bytes each, {stats['bios']} with a bio, {stats['broad_topics'] / stats['files']:.2f}"
            f" broad topics each, {stats['front_matter']} with front matter"
        )


if __name__ == "__main__":
    sys.exit(main())
