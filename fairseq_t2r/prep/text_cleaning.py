"""English text cleaning for the LM corpora: sentence splitting (SOTU) and Brown corpus untagging.

Pure functions on strings; ``corpora.py`` fetches the texts they clean.
"""
import re

_ABBREV = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "gov", "sen", "rep", "hon", "messrs",
    "no", "nos", "vol", "art", "sec", "secs", "ch", "co", "corp", "inc", "ltd", "vs", "etc",
    "e.g", "i.e", "u.s", "u.s.a", "u.n", "d.c", "a.m", "p.m", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mt", "ft", "capt", "col", "lt",
    "maj", "adm", "cf", "pp", "viz", "prof", "rev", "esq", "bros",
}
_SENT_BOUNDARY = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str):
    """Rule-based English sentence splitter (punctuation + capital, common abbreviations)."""
    out = []
    for para in text.splitlines():
        para = " ".join(para.split())
        if not para:
            continue
        pieces = _SENT_BOUNDARY.split(para)
        buf = ""
        for piece in pieces:
            buf = f"{buf} {piece}" if buf else piece
            last = buf.rsplit(" ", 1)[-1].rstrip(".").lower()
            # keep going after an abbreviation or a single initial ("John Q. Adams")
            if last in _ABBREV or (len(last) == 1 and last.isalpha()):
                continue
            out.append(buf)
            buf = ""
        if buf:
            out.append(buf)
    return out


def brown_untag(line: str):
    """``The/at jury/nn ``/`` ...`` -> list of words (tags stripped, quotes normalised)."""
    words = []
    for tok in line.split():
        word = tok.rsplit("/", 1)[0] if "/" in tok else tok
        if word in ("``", "''"):
            word = '"'
        if word == "." and words and words[-1].endswith("."):
            continue  # "Jr./np ./." -> "Jr."
        words.append(word)
    return words
