"""EN-DE sentence pairs from the LibreOffice help's HTML pages: paragraphs by ``id``, aligned
across the two languages' pages, then filtered.

Pure functions on page texts; ``corpora.py`` downloads and extracts the pages they read.
"""
import html.parser

_PARA_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}
_SKIP_TAGS = {"script", "style"}


class _ParagraphParser(html.parser.HTMLParser):
    """Collects the text of every ``<p>``/``<h1..6>`` that carries an ``id`` attribute.

    Entities are unescaped by the parser (``convert_charrefs``); markup inside the element
    (links, spans) contributes its text only. Inside a paragraph, elements marked ``hidden``
    are skipped unless their id starts with ``default``: that is what the help viewer shows
    for ``switchinline`` spans (``<span hidden class="MAC">Command</span><span hidden
    id="default...">Ctrl</span>`` -> ``Ctrl``; module-specific variants are dropped).
    """

    _VOID = {"br", "img", "input", "meta", "link", "hr", "wbr", "col", "area", "source"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs = []  # [(id, text)]
        self._id = None
        self._stack = []  # [(tag, hidden)] open elements inside the current paragraph
        self._skip = 0
        self._buf = []

    def _flush(self):
        self.paragraphs.append((self._id, " ".join("".join(self._buf).split())))
        self._id, self._stack, self._buf = None, [], []

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP_TAGS:
            self._skip += 1
            return
        if self._id is not None and tag in _PARA_TAGS and self._stack[0][0] == "p":
            self._flush()  # a <p> cannot contain a block: HTML closes it implicitly
        attrs = dict(attrs)
        if self._id is None:
            if tag in _PARA_TAGS and attrs.get("id"):
                self._id, self._stack, self._buf = attrs["id"], [(tag, False)], []
            return
        if tag in ("br", "td", "li", "div", "tr"):
            self._buf.append(" ")
        if tag in self._VOID:
            return
        hidden = "hidden" in attrs and not (attrs.get("id") or "").startswith("default")
        self._stack.append((tag, hidden))

    def handle_endtag(self, tag):
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
            return
        if self._id is None:
            return
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break
        if not self._stack:
            self._flush()

    def handle_data(self, data):
        if self._id is not None and not self._skip and not any(h for _, h in self._stack):
            self._buf.append(data)

    def close(self):
        super().close()
        if self._id is not None:
            self._flush()


def html_paragraphs(page: str):
    """``{(id, k): text}`` for the k-th occurrence of each paragraph id in an HTML page."""
    parser = _ParagraphParser()
    parser.feed(page)
    parser.close()
    out, seen = {}, {}
    for pid, text in parser.paragraphs:
        k = seen.get(pid, 0)
        seen[pid] = k + 1
        out[(pid, k)] = text
    return out


def align_html_pages(en_pages, de_pages):
    """Align paragraphs of two ``{relative page path: html}`` mappings by (path, id).

    Returns raw (unfiltered) ``(en, de)`` pairs in page order and document order.
    """
    pairs = []
    for rel in sorted(set(en_pages) & set(de_pages)):
        en = html_paragraphs(en_pages[rel])
        de = html_paragraphs(de_pages[rel])
        for key, en_text in en.items():
            if key in de:
                pairs.append((en_text, de[key]))
    return pairs


def filter_pairs(pairs, max_words=200, max_ratio=3.0):
    """Drop empty, identical (en == de), overlong and badly length-mismatched pairs; dedupe.

    Returns ``(kept_pairs, stats)``.
    """
    stats = {"aligned": len(pairs), "dropped_empty": 0, "dropped_identical": 0,
             "dropped_overlong": 0, "dropped_ratio": 0, "dropped_duplicate": 0}
    kept, seen = [], set()
    for en, de in pairs:
        en, de = " ".join(en.split()), " ".join(de.split())
        ne, nd = len(en.split()), len(de.split())
        if ne == 0 or nd == 0:
            stats["dropped_empty"] += 1
        elif en == de:
            stats["dropped_identical"] += 1
        elif ne > max_words or nd > max_words:
            stats["dropped_overlong"] += 1
        elif max(ne, nd) / min(ne, nd) > max_ratio:
            stats["dropped_ratio"] += 1
        elif (en, de) in seen:
            stats["dropped_duplicate"] += 1
        else:
            seen.add((en, de))
            kept.append((en, de))
    stats["pairs"] = len(kept)
    stats["en_words"] = sum(len(en.split()) for en, _ in kept)
    stats["de_words"] = sum(len(de.split()) for _, de in kept)
    return kept, stats


def align_libreoffice_html(en_pages, de_pages, max_words=200, max_ratio=3.0):
    """:func:`align_html_pages` + :func:`filter_pairs`; returns ``(pairs, stats)``."""
    kept, stats = filter_pairs(align_html_pages(en_pages, de_pages), max_words, max_ratio)
    stats = {"pages_en": len(en_pages), "pages_de": len(de_pages),
             "pages_aligned": len(set(en_pages) & set(de_pages)), **stats}
    return kept, stats
