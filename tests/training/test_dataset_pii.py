"""Personal data: found in any text, replaced by placeholders in imported chats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.paths import SEED_FILE
from knowledge.pii import find_names, find_pii, scrub

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("nama saya budi santoso, mau tanya soal PT PMA", "budi santoso"),
        ("Nama saya Budi Santoso dan saya mau buka kafe", "Budi Santoso"),
        ("namaku dewi lestari, aku tinggal di Ubud", "dewi lestari"),
        ("NAMA SAYA RINA WIJAYA", "RINA WIJAYA"),
        ("nama lengkap saya adalah siti rahayu", "siti rahayu"),
        ("perkenalkan, saya andi pratama dari Surabaya", "andi pratama"),
        ("halo, saya budi. mau tanya KITAS", "budi"),
        ("aku joko, pemilik warung di Bandung", "joko"),
        ("selamat pagi, dengan budi di sini", "budi"),
        ("sertifikatnya atas nama siti rahayu ya", "siti rahayu"),
        ("pak budi, dokumennya sudah lengkap", "budi"),
        ("terima kasih bu ani", "ani"),
        ("Halo Bapak Hendra Gunawan, izin sudah terbit", "Hendra Gunawan"),
        ("mbak ayu, paspornya sudah saya terima", "ayu"),
        ("Sdr. Made Wirawan diminta hadir", "Made Wirawan"),
        ("my name is john smith and i need a visa", "john smith"),
    ],
)
def test_names_are_scrubbed_in_any_case_after_an_introduction(text: str, name: str) -> None:
    scrubbed = scrub(text, find_names(text))
    assert "[NAMA]" in scrubbed and name not in scrubbed
    assert name.split()[0].lower() not in scrubbed.lower().split()


def test_a_name_introduced_in_lower_case_goes_everywhere_it_appears() -> None:
    text = "nama saya budi santoso. Tolong kirim ke Budi Santoso, atau Pak Budi."
    assert scrub(text, find_names(text)) == "nama saya [NAMA]. Tolong kirim ke [NAMA], atau Pak [NAMA]."


@pytest.mark.parametrize(
    "text",
    [
        "saya mau tanya soal KITAS investor",
        "aku wna dari Jerman, boleh punya PT PMA?",
        "Bapak dapat mengajukan permohonan lewat OSS.",
        "ibu rencanakan usaha apa di Bali?",
        "atas nama pribadi atau perusahaan?",
        "atas nama PT Maju Jaya",
        "dengan modal Rp10 miliar, dengan syarat KBLI tertentu",
        "Dengan demikian, izin usaha bisa terbit.",
        "saya sudah lapor ke kantor pajak",
        "Nama perusahaan harus didaftarkan ke AHU.",
    ],
)
def test_ordinary_sentences_keep_their_words(text: str) -> None:
    assert find_names(text) == [] and scrub(text, find_names(text)) == text


def test_the_seed_bank_is_not_taken_for_personal_data() -> None:
    texts = []
    for line in SEED_FILE.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        texts += [item["question"], item["golden_answer"]]
        texts += [variant for variants in item.get("variants", {}).values() for variant in variants]
    assert len(texts) > 500
    changed = [text for text in texts if scrub(text, find_names(text)) != text]
    assert changed == []
