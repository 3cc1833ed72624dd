"""Benchmark of the documents the hub issues: notices rendered to PDF and sealed as .edoc.

    .venv/bin/python bench/sealing.py [--documents 500] [--repeat 3] [--algorithm rsa|ec]

Prints, for each of three steps over --documents different notices (all five kinds, both
languages): documents per second and milliseconds per document, the median of --repeat
runs. The steps: render only (``render_pdf``); seal only (``seal`` of PDFs rendered
beforehand); and the whole path, render, seal and open (``open_edoc``, which verifies the
signature against the trusted certificate). The seal is generated at start (RSA 2048 by
default, as the e-seal of a municipality usually is).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.calibration import python_speed
from hub.documents import (
    ADMINISTRATIVE_ACTS,
    KINDS,
    Notice,
    SealKey,
    format_date,
    generate_seal,
    open_edoc,
    render_pdf,
    seal,
)

APPEAL = (
    "Šo lēmumu var apstrīdēt pašvaldības Izglītības, kultūras un sporta departamentā viena "
    "mēneša laikā no dienas, kad tas stājies spēkā, iesniedzot iesniegumu e-pakalpojumā."
)
SIGNED_AT = datetime(2026, 12, 8, 9, 30, tzinfo=UTC)


def notices(count: int) -> list[Notice]:
    """``count`` different notices, cycling through every kind in both languages."""
    issued = date(2026, 12, 8)
    made = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        language = "lv" if n // len(KINDS) % 2 == 0 else "en"
        variables = {
            "reference": f"PII-{n:08X}",
            "institution": f"Rīgas pirmsskolas izglītības iestāde Nr. {n % 150 + 1}",
            "group": f"Grupa „Zīļuki” {n % 6 + 1}",
            "start_date": format_date(date(2027, 9, 1)),
            "respond_by": format_date(issued + timedelta(days=14 + n % 7)),
            "response_days": "14",
            "notified_rule": "Paziņojums uzskatāms par paziņotu otrajā darba dienā.",
            "reason": "Bērnam ir piešķirta vieta iestādē, kas pieteikumā norādīta augstāk.",
            "portal_url": "https://e-pakalpojumi.example.lv/pii",
        }
        made.append(
            Notice(
                kind=kind,
                language=language,
                registration_number=f"PII/2026/{n + 1:06d}",
                issued_on=issued,
                sender="Rīgas valstspilsēta",
                variables=variables,
                appeal=APPEAL if kind in ADMINISTRATIVE_ACTS else None,
            )
        )
    return made


def timed(step: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    """Median and all run times (seconds) of ``step``."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs), runs


def report(label: str, count: int, median: float, runs: list[float]) -> None:
    each = ", ".join(f"{run * 1000 / count:.2f}" for run in runs)
    print(
        f"{label:<28} {count / median:8.0f} documents/s  {median * 1000 / count:6.2f} ms/document"
        f"  (runs: {each} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--algorithm", choices=("rsa", "ec"), default="rsa")
    args = parser.parse_args()

    print(python_speed())
    with tempfile.TemporaryDirectory() as directory:
        key_path, cert_path = generate_seal(
            "Bench e-seal", "Bench municipality", Path(directory), algorithm=args.algorithm
        )
        key = SealKey.from_files(key_path, cert_path)
    batch = notices(args.documents)
    pdfs = [render_pdf(notice) for notice in batch]  # warms fonts and templates
    sizes = [len(pdf) for pdf in pdfs]
    sealed_sizes = [len(seal(key, "pazinojums.pdf", pdf, at=SIGNED_AT)) for pdf in pdfs[:50]]
    print(
        f"{args.documents} notices, seal {args.algorithm.upper()}; PDF median "
        f"{statistics.median(sizes) / 1024:.1f} KiB, .edoc median "
        f"{statistics.median(sealed_sizes) / 1024:.1f} KiB"
    )

    def render_only() -> None:
        for notice in batch:
            render_pdf(notice)

    def seal_only() -> None:
        for pdf in pdfs:
            seal(key, "pazinojums.pdf", pdf, at=SIGNED_AT)

    def whole_path() -> None:
        for notice in batch:
            pdf = render_pdf(notice)
            opened = open_edoc(
                seal(key, "pazinojums.pdf", pdf, at=SIGNED_AT), trusted=[key.certificate]
            )
            if opened.content != pdf:
                raise SystemExit("the opened document differs from the sealed one")

    for label, step in (
        ("render", render_only),
        ("seal", seal_only),
        ("render + seal + open/verify", whole_path),
    ):
        median, runs = timed(step, args.repeat)
        report(label, args.documents, median, runs)


if __name__ == "__main__":
    main()
