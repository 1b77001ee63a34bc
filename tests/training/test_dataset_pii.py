"""Personal data: found in any text, replaced by placeholders in imported chats."""

from __future__ import annotations

import pytest

from training.dataset.pii import find_names, find_pii, scrub


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("kirim ke daniel.hoffmann@examplemail.de ya", "email"),
        ("WA saya +62 812-3456-7890", "phone"),
        ("telepon kantor (021) 5551234", "phone"),
        ("HP 081234567890", "phone"),
        ("NIK 3171012345678901", "nik"),
        ("NPWP 12.345.678.9-012.345", "npwp"),
        ("paspor saya C1234567", "passport"),
        ("passport no. X12345678", "passport"),
        ("kantor di Jl. Sudirman No. 12, RT 03/RW 05, Jakarta", "address"),
    ],
)
def test_each_kind_is_found(text: str, kind: str) -> None:
    assert kind in {span.kind for span in find_pii(text)}


@pytest.mark.parametrize(
    "text",
    [
        "Modal disetor Rp10.000.000.000 atau Rp2,5 miliar, PPN 11%, KBLI 56303.",
        "Dasarnya PP No. 35 Tahun 2021 dan UU 6/2011; berlaku 30 hari.",
        "Jalan keluarnya adalah mengajukan ITAS baru.",
    ],
)
def test_figures_and_references_are_not_personal_data(text: str) -> None:
    assert find_pii(text) == []


def test_scrub_replaces_names_found_anywhere_in_the_chat() -> None:
    user = "Halo, saya Daniel Hoffmann, email daniel.h@example.de, NIK 3171012345678901."
    agent = "Halo Pak Daniel, dokumen Bapak Daniel Hoffmann sudah kami terima."
    names = find_names(user) + find_names(agent)
    assert "Daniel Hoffmann" in names
    assert scrub(user, names) == "Halo, saya [NAMA], email [EMAIL], NIK [NIK]."
    assert scrub(agent, names) == "Halo Pak [NAMA], dokumen Bapak [NAMA] sudah kami terima."
