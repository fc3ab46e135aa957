"""A ~4M-word English corpus for the word2vec quality comparison, from Debian's dict-gcide
(GNU Collaborative International Dictionary of English, GPL; `apt-get download dict-gcide`).

One dictionary entry per line, lowercased, words of letters only (markup, pronunciations and
the "[1913 Webster]" source tags removed).

    apt-get download dict-gcide && dpkg-deb -x dict-gcide_*.deb x
    python tests/bench/gcide_corpus.py x/usr/share/dictd/gcide.dict.dz > gcide.txt
"""
import gzip
import re
import sys

WORD = re.compile(r"[a-z]+")
TAG = re.compile(r"\([^)]*[\[\]^*\"`][^)]*\)|\[[^\]]*\]|\\[^\\]*\\|--[A-Z][\w. ]*\.")


def entries(path):
    entry = []
    with gzip.open(path, "rt", encoding="utf8", errors="replace") as f:
        for line in f:
            if not line.strip():
                if entry:
                    yield " ".join(entry)
                entry = []
            else:
                entry.append(line.strip())
    if entry:
        yield " ".join(entry)


out = sys.stdout
for text in entries(sys.argv[1]):
    words = WORD.findall(TAG.sub(" ", text).lower())
    if len(words) >= 3:
        out.write(" ".join(words) + "\n")
