"""Word lists behind the name recogniser in `pii.py` (data only, lower case, whole words).

`FUNCTION_WORDS` end a name ("nama saya budi *dan* ..."); `ORDINARY_WORDS` are words that follow
"saya", "dengan", "atas nama" or an honorific in ordinary sentences ("saya *mau*", "dengan *modal*",
"Bapak *dapat*"), so they are not taken for a name written in lower case.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# fmt: off
FUNCTION_WORDS: frozenset[str] = _words(
    # conjunctions, prepositions, articles, particles
    "dan atau serta tapi tetapi namun melainkan sedangkan padahal karena sebab jadi maka sehingga agar "
    "supaya kalau jika jikalau apabila bila kalo ketika saat waktu sejak sampai hingga sebelum sesudah "
    "setelah selama sambil yang di ke dari pada kepada untuk buat bagi dengan tanpa oleh tentang soal "
    "sebagai seperti kayak antara dalam luar atas bawah depan belakang samping sekitar menurut terhadap "
    "per si sang para kah lah pun nih dong sih deh kok lho loh ya yuk kan tuh toh wah nah eh oh ah "
    "halo hai hi hello selamat pagi siang sore malam terima kasih makasih thanks thank you please "
    "mohon tolong maaf permisi salam hormat regards "
    # pronouns, demonstratives, question words
    "saya aku gue gw gua kami kita kamu anda engkau kau dia ia beliau mereka lo lu elu ini itu tersebut "
    "sini situ sana begini begitu gini gitu siapa apa apakah mana manakah kapan bagaimana gimana mengapa "
    "kenapa berapa berapakah adalah ialah yaitu yakni merupakan ada "
    # auxiliaries, modals, adverbs
    "mau ingin pengen pingin pengin akan bakal sedang lagi masih sudah udah telah belum baru pernah "
    "bisa dapat boleh harus wajib perlu mesti musti mungkin tidak tak nggak gak enggak ngga ga bukan "
    "jangan juga pula saja aja hanya cuma cuman doang sangat banget sekali amat paling lebih kurang "
    "agak cukup terlalu semua seluruh setiap tiap beberapa banyak sedikit satu dua tiga empat lima "
    "pertama kedua sendiri pribadi sekaligus memang emang tentu pasti benar bener betul sering jarang "
    "selalu kadang biasa biasanya langsung segera nanti tadi kemarin besok sekarang kini dulu lalu "
    "kemudian terus tetap hampir sama bersama also and or the a an of to for in on at is am are was "
    "with by from as not just here there this that it me my we our you your"
)

ORDINARY_WORDS: frozenset[str] = FUNCTION_WORDS | _words(
    # people and roles (not names)
    "orang warga wna wni bule ekspat expat expatriate pendatang turis wisatawan investor pemilik "
    "pemegang pengurus direktur komisaris karyawan pegawai pekerja buruh staf staff tka tki pmi "
    "istri suami pasangan pasanganku anak keluarga orangtua ortu ayah bapak ibu kakak adik teman "
    "kawan klien customer pelanggan konsumen pembeli penjual penyewa pengusaha pedagang pensiunan "
    "mahasiswa pelajar notaris advokat pengacara konsultan agen dokter korban pelaku saksi pihak "
    "penjamin sponsor ahli tenaga admin tim kami perseroan perusahaan pt cv firma koperasi yayasan "
    "badan lembaga instansi kantor pemerintah negara dinas kementerian imigrasi pajak bank "
    # common nouns of the domain
    "modal saham usaha bisnis izin perizinan syarat persyaratan dokumen surat akta sk nib kbli oss "
    "npwp nik ktp kk paspor passport visa voa itas itap kitas kitap rptka imta sponsor hak hgb shm "
    "hgu sertifikat tanah rumah properti villa vila apartemen bangunan gedung lahan lokasi alamat "
    "kontrak perjanjian sewa jual beli harga biaya tarif ppn pph pbb bphtb pajak denda sanksi pidana "
    "penjara ancaman hukum hukuman pasal uu pp perpres permen permenkumham kuhp aturan peraturan "
    "ketentuan kewajiban laporan lapor omzet peredaran penghasilan pendapatan gaji upah keuntungan "
    "produk jasa layanan barang ekspor impor kafe restoran toko warung hotel kos online digital "
    "remote kerja pekerjaan jabatan posisi status masa jangka waktu tahun bulan minggu hari jam "
    "batas batasan minimal maksimal minimum maksimum nilai jumlah total persen porsi luas ukuran "
    "cakupan keahlian pengalaman pendidikan data informasi contoh cara proses prosedur tahap "
    "pengajuan permohonan pendaftaran perpanjangan pembayaran bukti nomor nama rekening induk "
    "cabang pusat daerah kota provinsi kabupaten desa wilayah indonesia luar negeri dalam head "
    "office jadwal rencana tujuan alasan masalah kasus urusan hal sesuatu apa-apa segala "
    # verbs and adjectives heard after "saya", "aku", "dengan", "Bapak/Ibu"
    "tanya nanya bertanya minta meminta cari mencari butuh membutuhkan punya mempunyai memiliki pakai "
    "memakai gunakan menggunakan pegang memegang kelola mengelola urus ngurus mengurus buka membuka "
    "tutup menutup daftar mendaftar daftarkan mendaftarkan ajukan mengajukan siapkan menyiapkan "
    "rencanakan merencanakan bayar membayar kirim mengirim terima menerima dapat mendapat dapetin "
    "mendapatkan tinggal menetap pindah datang masuk keluar pulang balik kembali pergi berangkat "
    "kerja bekerja usaha berusaha jual menjual beli membeli sewa menyewa sewain nyewa kawin menikah "
    "nikah cerai lahir meninggal sakit bingung ragu takut khawatir yakin setuju paham mengerti tahu "
    "tau kenal ingat lupa coba mencoba ikut mengikuti pilih memilih tunggu menunggu lihat melihat "
    "cek periksa baca membaca tulis menulis isi mengisi tanda tangan jelaskan jelasin laporin "
    "laporkan melaporkan bantu membantu bantuan hubungi menghubungi ditipu dibawa ditunjuk dipakai "
    "diurus dikirim diminta ditolak diterima dibayar digunakan penuhi memenuhi kena terkena termasuk "
    "sebut disebut berbicara bicara ngomong bilang cerita senang suka baik buruk rapi teliti hati-hati "
    "cepat lambat lama baru resmi legal ilegal asing lokal besar kecil penuh kosong sah "
    "berlaku aktif habis mati hidup tertentu lain lainnya berikut berikutnya demikian terkait "
    "memperhitungkan mempertimbangkan menyatakan menjelaskan membuat bikin buat dibuat "
    # everyday verbs, adjectives and nouns
    "siap jawab menjawab tebak menebak maksud sekalian susah sulit mudah gampang fitur kumpul kebo "
    "tidur makan minum mandi main bermain jalan berjalan lari duduk berdiri pikir berpikir rasa "
    "merasa kira mengira pesan memesan senang sedih capek lelah sibuk libur cuti hamil sehat mulai "
    "memulai selesai menyelesaikan telepon telp wa whatsapp chat email sms asal berasal tumbuh kuliah "
    "sekolah belajar magang freelance freelancer nomad traveler pengen sering punya tertarik berminat "
    "berencana rencana niat berniat sempat kesulitan kesal puas kecewa lapar haus ngantuk pusing "
    "heran kaget setuju bangga malu lupa sabar marah cinta sayang rindu kangen tertipu khawatir "
    "mengalami alami terima dengar mendengar lihat nonton menonton pakai coba baru lama jauh dekat "
    "tinggi rendah mahal murah penting serius jujur salah tepat jelas lengkap kurang sama beda "
    "berbeda mirip warga negara perempuan laki-laki pria wanita cowok cewek bayi remaja dewasa tua "
    "muda pemula ibu-ibu bapak-bapak semuanya sekalian sebentar sebenarnya sepertinya kayaknya "
    "rumah kamar dapur kantor air api es nasi roti kopi teh uang dana duit kartu hp ponsel laptop "
    "aplikasi sistem situs website akun password kode fitur menu "
    # countries and nationalities ("saya Jerman", "I am Indonesian")
    "indonesian jerman german australia australian amerika american inggris british belanda dutch "
    "perancis prancis french jepang japanese cina china chinese tionghoa korea korean singapura "
    "singaporean malaysia malaysian india indian rusia russian italia italian spanyol spanish "
    "swiss kanada canadian"
)
