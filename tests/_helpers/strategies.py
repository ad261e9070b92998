"""Hypothesis strategies: hostile and valid dataset names, tags, refs and manifest paths.

The patterns below are written out here on purpose (not imported from ``wrdsvault``): the tests
check the code against the specification, not against itself.

Imported as ``from _helpers import strategies as S`` (see ``tests/test_names.py``).
"""

from __future__ import annotations

from hypothesis import strategies as st

#: The specification of a dataset name (docs/format.md), used with re.fullmatch.
DATASET_PATTERN = r"[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}"
#: The specification of a tag name; "latest" is reserved on top of it.
TAG_PATTERN = r"[A-Za-z][A-Za-z0-9._-]{0,63}"

#: Characters that look like the ASCII ones a name may hold (Cyrillic, Greek, fullwidth, dotless
#: i, Kelvin sign, Unicode digits and dots).
LOOKALIKES = (
    "\u0430",  # Cyrillic a
    "\u0441",  # Cyrillic es, looks like c
    "\u0435",  # Cyrillic ie, looks like e
    "\u043e",  # Cyrillic o
    "\u0440",  # Cyrillic er, looks like p
    "\u0455",  # Cyrillic dze, looks like s
    "\u03bf",  # Greek omicron
    "\u0131",  # dotless i
    "\u212a",  # Kelvin sign, case-folds to k
    "\u017f",  # long s, case-folds to s
    "\uff4d",  # fullwidth m
    "\uff0e",  # fullwidth full stop
    "\u3002",  # ideographic full stop
    "\u2024",  # one dot leader
    "\ufe52",  # small full stop
    "\u0660",  # Arabic-Indic digit zero
    "\uff11",  # fullwidth digit one
    "\u00b2",  # superscript two
)

#: Fragments that must never make it into a path or into SQL.
FRAGMENTS = (
    "/",
    "\\",
    "..",
    "../",
    "/..",
    "\x00",
    "\n",
    "\r",
    "\t",
    " ",
    "'",
    '"',
    "`",
    ";",
    "--",
    "/*",
    "$1",
    "?",
    "%",
    "*",
    ":",
    "~",
    "\u200b",  # zero-width space
    "\u0301",  # combining acute accent
    "\ufeff",  # byte-order mark
    "\u202e",  # right-to-left override
    "\udcff",  # lone surrogate: cannot even be encoded as a file name
    *LOOKALIKES,
)

#: Hand-picked hostile strings for every kind of name (dataset, tag, ref, manifest path).
HOSTILE = (
    "",
    ".",
    "..",
    "../x",
    "../../etc/passwd",
    "crsp/../../x",
    "crsp.msf/../../../x",
    "/abs",
    "/etc/passwd",
    "a\\b",
    "crsp\\msf",
    "..\\..\\x",
    "C:\\x",
    "\\\\server\\share",
    "crsp.msf\x00",
    "crsp\x00.msf",
    "crsp.msf\x00/../../x",
    "crsp.msf\n",
    "crsp\n.msf",
    "\ncrsp.msf",
    "crsp.msf\r",
    "crsp.msf\t",
    "\u0441rsp.msf",  # Cyrillic es
    "crsp\uff0emsf",  # fullwidth full stop
    "crsp\u3002msf",
    "\uff43rsp.msf",  # fullwidth c
    "crsp.msf\u200b",
    "crsp.ms\u0301f",
    "crsp.m\u017ff",
    "CRSP.MSF",
    "Crsp.msf",
    "crsp.MSF",
    "crsp.msf ",
    " crsp.msf",
    "crsp. msf",
    "crsp.msf;",
    "crsp.msf; drop view crsp.msf",
    "crsp.msf\"; copy (select 1) to '/tmp/x'; --",
    "crsp'.msf",
    'crsp".msf',
    "crsp.m'sf",
    "crsp.msf--",
    "crsp..msf",
    ".msf",
    "crsp.",
    "crsp",
    "crsp.msf.x",
    "crsp/msf",
    "crsp:msf",
    "1crsp.msf",
    "_crsp.msf",
    "crsp.1msf",
    "crsp._msf",
    "a" * 64 + ".b",
    "a." + "b" * 64,
    "x" * 300,
    "\u00e9" * 200,  # 400 bytes in UTF-8
    "~",
    "~/x",
    "$HOME",
    "%2e%2e/x",
    "*",
    "crsp.*",
    "crsp.msf/",
    "data/crsp",
    "latest",
    "latest\n",
    "LATEST/../x",
    "2025-01-01\n",
    "2025-01-01/../x",
    "2025-01-01\x00",
    "\u0662\u0660\u0662\u0665-\u0660\u0661-\u0660\u0661",  # Arabic-Indic digits: 2025-01-01
    "20251201T143012123456Z-1a2b3c4d/../x",
    "20251201T143012123456Z-1A2B3C4D",
    "crsp.msf\udcff",
)


@st.composite
def _inserted(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A string from ``base`` with one hostile fragment inserted at a random position."""
    text = draw(base)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(FRAGMENTS)) + text[at:]


@st.composite
def _substituted(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A string from ``base`` with one character replaced by a look-alike."""
    text = draw(base)
    if not text:
        return draw(st.sampled_from(LOOKALIKES))
    at = draw(st.integers(0, len(text) - 1))
    return text[:at] + draw(st.sampled_from(LOOKALIKES)) + text[at + 1 :]


def valid_dataset_names() -> st.SearchStrategy[str]:
    """Names that match the dataset pattern (most of them unknown to any source)."""
    return st.from_regex(DATASET_PATTERN, fullmatch=True)


def _mutations(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        _inserted(base),
        _substituted(base),
        base.map(str.upper),
        base.map(lambda s: s + "\n"),
        base.map(lambda s: s + "x" * 260),
        base.map(lambda s: "../" + s),
        base.map(lambda s: "/" + s),
    )


def hostile_dataset_names() -> st.SearchStrategy[str]:
    """Strings built to slip past a dataset-name check: traversal, look-alikes, quotes, length."""
    return st.one_of(
        st.sampled_from(HOSTILE),
        _mutations(st.sampled_from(("crsp.msf", "comp.funda", "ff.factors_monthly"))),
        _mutations(valid_dataset_names()),
        st.text(alphabet=st.sampled_from("abcz09_./\\ \n'\";-" + "".join(LOOKALIKES)), max_size=20),
        st.text(max_size=80),
    )


def any_dataset_strings() -> st.SearchStrategy[str]:
    """Valid and hostile names mixed, for checks that compare against the pattern."""
    return st.one_of(valid_dataset_names(), hostile_dataset_names())


def valid_tags() -> st.SearchStrategy[str]:
    """Tag names that match the tag pattern, except the reserved 'latest'."""
    return st.from_regex(TAG_PATTERN, fullmatch=True).filter(lambda s: s != "latest")


def hostile_tags() -> st.SearchStrategy[str]:
    """Strings that a tag check must refuse or keep inside ``tags/``."""
    return st.one_of(
        st.sampled_from(HOSTILE),
        _mutations(valid_tags()),
        st.text(max_size=80),
    )


def hostile_refs() -> st.SearchStrategy[str]:
    """Strings passed where a snapshot ref is expected (no valid as-of date among the samples)."""
    return st.one_of(
        st.sampled_from(HOSTILE),
        _mutations(st.sampled_from(("latest", "2025-12-01", "2025-12-01T14:30:00Z"))),
        st.text(max_size=80),
    )


def hostile_relpaths() -> st.SearchStrategy[str]:
    """Strings a damaged or forged manifest could hold as a partition path."""
    good = "data/crsp/msf/year=2020/0123456789abcdef.parquet"
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.sampled_from(
            (
                "data",
                "data/",
                "data//x",
                "data/./x",
                "data/../vault.json",
                "data/crsp/../../HEAD",
                "data/crsp/msf/..",
                "data\\..\\vault.json",
                "/data/x",
                "./data/x",
                "data/x\x00",
                "snapshots/x.json",
                "DATA/x",
            )
        ),
        _mutations(st.just(good)),
        st.lists(
            st.sampled_from(("data", "..", ".", "", "x", "crsp", "/", "\\", "\x00", "y\n")),
            min_size=1,
            max_size=6,
        ).map("/".join),
        st.text(max_size=60).map(lambda s: "data/" + s),
    )


def non_strings() -> st.SearchStrategy[object]:
    """Values of the wrong type where a str is expected."""
    return st.one_of(
        st.none(),
        st.integers(),
        st.floats(allow_nan=False),
        st.binary(max_size=20),
        st.just(b"crsp.msf"),
        st.just(("crsp", "msf")),
        st.just({"name": "crsp.msf"}),
    )
