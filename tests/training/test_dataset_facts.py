"""The fact registry loader and the figures read from Indonesian text."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.errors import DatasetInputError
from knowledge.facts import load_facts
from knowledge.quantities import find_quantities
from training.dataset.build import DEFAULT_FACTS


def test_project_registry_loads_with_status_and_comparable_values() -> None:
    facts = {fact.id: fact for fact in load_facts(DEFAULT_FACTS)}
    assert {fact.status for fact in facts.values()} == {"verified", "needs_confirmation"}
    assert facts["voa_validity"].values == (30.0,) and facts["voa_validity"].unit == "day"
    assert (
        facts["ppn_rate_general"].values == pytest.approx((11.0,))
        and facts["ppn_rate_general"].unit == "percent"
    )
    assert facts["kuhp_assault_penalty"].values == (910,)
    assert 80 * 365 in facts["hgb_term"].values
    assert not facts["pt_capital_by_agreement"].checkable


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("- id: a\n  description: x\n", 1, "missing field 'unit'"),
        (
            "- id: a\n  description: d\n  value: 1\n  unit: IDR\n  source: s\n  status: maybe\n"
            "  applies_to: PT\n  keywords: [k]\n",
            1,
            "unknown status 'maybe'",
        ),
        (
            "- id: a\n  description: d\n  value: 1\n  unit: IDR\n  source: s\n  status: verified\n"
            "  applies_to: PT\n  keywords: k\n",
            1,
            "'keywords' must be a list",
        ),
        (
            "- {id: a, description: d, value: 1, unit: IDR, source: s, status: verified, applies_to: PT,\n"
            "   keywords: []}\n"
            "- {id: a, description: d, value: 2, unit: IDR, source: s, status: verified, applies_to: PT,\n"
            "   keywords: []}\n",
            3,
            "duplicate fact id 'a' (first at line 1)",
        ),
        ("- id: [unclosed\n", 2, "malformed YAML"),
    ],
)
def test_bad_registry_entries_name_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetInputError) as error:
        load_facts(path)
    assert error.value.line == line and message in error.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Modal minimal 10 miliar rupiah", [(1e10, 1e10, "IDR")]),
        ("Rp10.000.000.000 atau Rp 2,5 miliar", [(1e10, 1e10, "IDR"), (2.5e9, 2.5e9, "IDR")]),
        ("biayanya Rp 3-5 juta", [(3e6, 5e6, "IDR")]),
        ("USD 60.000 per tahun", [(6e4, 6e4, "USD")]),
        ("PPN 11% dan PPh final 0,5 persen", [(11, 11, "percent"), (0.5, 0.5, "percent")]),
        ("tarif di kisaran 10% sampai 15%", [(10, 15, "percent")]),
        ("berlaku 1-2 tahun, enam bulan, setahun", [(365, 730, "day"), (180, 180, "day"), (365, 365, "day")]),
        ("penjara paling lama 2 tahun 6 bulan", [(910, 910, "day")]),
        ("PP No. 31 Tahun 2013 Pasal 31", []),
    ],
)
def test_figures_are_read_the_way_indonesian_writes_them(
    text: str, expected: list[tuple[float, float, str]]
) -> None:
    assert [(q.low, q.high, q.unit) for q in find_quantities(text)] == [
        (pytest.approx(low), pytest.approx(high), unit) for low, high, unit in expected
    ]
