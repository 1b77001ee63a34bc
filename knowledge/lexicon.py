"""Word lists behind the register, naturalness, similarity and topic rules (data only).

All entries are lower case; matching is on whole words (see `register.py`, `checks.py` and
`similarity.py`).
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# fmt: off
# Particles and colloquial forms that mark a casual register. "Strong" ones never belong in a
# formal text; "soft" ones (ya, kan, aku, kamu) are also heard in polite business talk.
CASUAL_STRONG: frozenset[str] = _words(
    "nih dong sih deh kok lho loh yuk gimana gini gitu aja gak nggak enggak ngga ga udah banget bikin "
    "pake kayak gue gw lo lu emang emangnya cuma nanya tau dapetin ngurus bener kalo btw min kak bro sis "
    "makasih thanks doang mending ribet sip"
)
CASUAL_SOFT: frozenset[str] = _words("ya kan aku kamu")
CASUAL_PARTICLES: frozenset[str] = _words("nih dong sih deh kok lho loh ya yuk kan tuh")

# Marks of a formal register: honorifics, -kah questions, legal references, letter formulas.
FORMAL_WORDS: frozenset[str] = _words(
    "mohon apakah bagaimanakah berapakah bilamana sebagaimana dimaksud berdasarkan ketentuan pasal "
    "peraturan undang-undang bapak ibu perihal hormat menanyakan demikian tersebut adapun kiranya "
    "berkenan hendak"
)

# Colloquial word -> standard word, used to lift a text into the formal register.
FORMAL_SWAPS: dict[str, str] = {
    "gak": "tidak", "nggak": "tidak", "enggak": "tidak", "ngga": "tidak", "ga": "tidak", "aja": "saja",
    "udah": "sudah", "gimana": "bagaimana", "kayak": "seperti", "bikin": "membuat", "pake": "pakai",
    "tau": "tahu", "banget": "sangat", "kalo": "kalau", "emang": "memang", "cuma": "hanya",
    "dapetin": "mendapatkan", "ngurus": "mengurus", "bener": "benar", "nanya": "bertanya",
    "makasih": "terima kasih", "kamu": "Anda", "aku": "saya", "gue": "saya", "gw": "saya", "doang": "saja",
    "mending": "sebaiknya", "ribet": "rumit", "gini": "begini", "gitu": "begitu",
}

# Standard word -> colloquial word, used to bring a text down to the casual register.
CASUAL_SWAPS: dict[str, str] = {
    "saja": "aja", "sudah": "udah", "bagaimana": "gimana", "tidak": "nggak", "seperti": "kayak",
    "hanya": "cuma", "memang": "emang", "anda": "kamu", "apakah": "apa", "mengurus": "ngurus",
}

# Phrases that read as word-for-word translations from English.
TRANSLATIONESE: dict[str, str] = {
    "semoga email ini menemukan anda": "\"I hope this email finds you\"",
    "menemukan anda dengan baik": "\"finds you well\"",
    "jangan ragu untuk": "\"don't hesitate to\"",
    "merasa bebas untuk": "\"feel free to\"",
    "pada akhir hari": "\"at the end of the day\"",
    "mengambil tempat": "\"take place\" (use: berlangsung)",
    "dalam hal dari": "\"in terms of\"",
    "dalam istilah": "\"in terms of\"",
    "untuk menjadi jujur": "\"to be honest\"",
    "sebagai soal fakta": "\"as a matter of fact\"",
    "saya akan senang untuk": "\"I would be happy to\"",
    "apakah anda ingin saya untuk": "\"would you like me to\"",
    "membuat sebuah keputusan": "\"make a decision\" (use: memutuskan)",
    "membuat sebuah aplikasi": "\"make an application\" (use: mengajukan permohonan)",
    "selamat datang ke": "\"welcome to\" (use: selamat datang di)",
    "itu adalah penting": "\"it is important\"",
    "adalah sangat penting untuk": "\"it is very important to\"",
    "di mana anda dapat": "\"where you can\" (relative 'di mana')",
    "yang mana adalah": "\"which is\"",
    "dalam rangka untuk": "\"in order to\" (use: untuk / agar)",
    "pada hari ini dan usia": "\"in this day and age\"",
    "memiliki sebuah": "\"have a\" (drop 'sebuah')",
    "tergantung pada anda": "\"it's up to you\"",
    "anda dipersilakan untuk": "\"you are welcome to\"",
    "bertanya pertanyaan": "\"ask a question\" (use: bertanya)",
}

# Domain terms that place a text in a category (used to categorise imported conversations).
TOPIC_TERMS: dict[str, tuple[str, ...]] = {
    "immigration": (
        "kitas", "kitap", "visa", "imigrasi", "izin tinggal", "paspor", "overstay", "rptka", "imta",
        "e-visa", "voa", "sponsor"
    ),
    "criminal_code": (
        "kuhp", "pidana", "penjara", "polisi", "penipuan", "narkoba", "pencemaran", "hukuman",
        "tersangka", "laporan polisi", "denda pidana"
    ),
    "company": (
        "pt pma", "pt", "oss", "nib", "kbli", "akta pendirian", "notaris", "modal disetor",
        "perseroan", "izin usaha", "cv"
    ),
    "tax": ("pajak", "pph", "ppn", "npwp", "spt", "transfer pricing", "faktur", "tax", "p3b", "bukti potong"),
    "property": (
        "hgb", "hgu", "hak pakai", "hak milik", "sertifikat tanah", "tanah", "properti", "villa",
        "rumah", "apartemen", "sewa", "leasehold", "bpn"
    ),
}

# Register openers and closers the offline generator puts around a question ({q}: the question with a
# lower-case first letter, {Q}: as written).
OPENERS: dict[str, tuple[str, ...]] = {
    "formal": (
        "Mohon penjelasan, {q}", "Dengan hormat, saya ingin menanyakan: {q}", "Izin bertanya, {q}",
        "Mohon informasinya, {q}", "Saya ingin memperoleh kejelasan mengenai hal berikut: {q}"
    ),
    "business": (
        "Boleh minta info? {Q}", "Sebelum kami melangkah lebih jauh, {q}", "Mohon masukannya. {Q}",
        "Dari sisi kepatuhan, {q}", "Pertanyaan singkat: {q}"
    ),
    "casual": ("Mau nanya dong, {q}", "Kak, {q}", "Halo min, {q}", "Eh, {q}", "Bingung nih, {q}", "Btw, {q}"),
}
CLOSERS: dict[str, tuple[str, ...]] = {
    "formal": ("Atas penjelasannya saya ucapkan terima kasih.", "Terima kasih atas perhatiannya."),
    "business": ("Terima kasih sebelumnya.", "Mohon info singkatnya."),
    "casual": ("Makasih ya!", "Thanks!", "Bantu jawab dong."),
}

# Words that carry register or grammar rather than content; left out when comparing questions.
STOPWORDS: frozenset[str] = _words(
    "yang di ke dari dan atau itu ini tersebut untuk dengan pada dalam apa apakah bagaimana bagaimanakah "
    "gimana berapa berapakah kapan siapa mengapa kenapa saya aku kami kita anda kamu gue gw nih dong sih "
    "deh kok ya kan lho loh aja saja mohon tolong bisa dapat dapatkah boleh ada adalah sudah udah mau "
    "ingin perlu harus akan juga kalau kalo jika apabila buat bagi tentang mengenai terkait soal hal min "
    "kak pak bu bapak ibu halo hai terima kasih makasih thanks penjelasan informasi info tanya bertanya "
    "menanyakan nanya izin seperti kayak nggak tidak gak enggak ga jadi sebenarnya sebetulnya gitu begitu "
    "gini begini btw oke baik selamat pagi siang sore malam hormat dengan"
)
LEGAL_REFERENCE_WORDS: frozenset[str] = _words(
    "pp uu no nomor tahun pasal ayat huruf menurut berdasarkan peraturan permen pmk perpres"
)
# fmt: on
