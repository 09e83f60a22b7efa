"""Each translated page keeps in step with its English original: the same
headings at the same levels in the same order (a heading's `code spans`,
kept as they are in a translation, the same too), the same number of
fenced code blocks, and a link from each page to the other. A heading added to or
removed from one page only fails here, naming the first heading that
differs. A heading reworded in English only fails too: each translation
records, in a comment on its first lines, a fingerprint of the English
headings it was made from (`<!-- en-headings: 1a2b3c4d5e6f -->`), and the
test names the headings that changed since. Reads the source tree only;
starts no chatgate."""
import hashlib
import os
import re
import unittest

from harness import SOURCE_DIR

# (English page, its translation), paths relative to the source tree.
PAIRS = [
    ("README.md", "README.zh-CN.md"),
    ("docs/channels/feishu.md", "docs/zh-CN/feishu.md"),
    ("docs/channels/dingtalk.md", "docs/zh-CN/dingtalk.md"),
    ("docs/fleet.md", "docs/zh-CN/fleet.md"),
    ("docs/quickstart.md", "docs/zh-CN/quickstart.md"),
    ("docs/upgrades.md", "docs/zh-CN/upgrades.md"),
]

HEADING = re.compile(r"^(#+)\s")
FENCE = re.compile(r"^\s*```")


def read(path):
    with open(os.path.join(SOURCE_DIR, path), encoding="utf-8") as f:
        return f.read()


def structure(text):
    """The page's headings as (level, line number, text), outside code
    fences, and its number of fenced code blocks."""
    headings = []
    fences = 0
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            if not in_fence:
                fences += 1
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = HEADING.match(line)
        if m:
            headings.append((len(m.group(1)), number, line.strip()))
    return headings, fences, in_fence


CODE_SPAN = re.compile(r"`[^`]*`")
FINGERPRINT = re.compile(r"<!--\s*en-headings:\s*([0-9a-f]{12})\s*-->")


def fingerprint(headings):
    """12 hex digits standing for the English page's headings (level and
    words, not line numbers): what a translation records it was made from."""
    text = "\n".join("%d %s" % (level, words) for level, _, words in headings)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def first_difference(en, tr, english, translated):
    """The first heading that differs, in words, or None. Headings are
    paired in order; a pair differs in level, or in its code spans
    (`make run`), which a translation keeps as they are."""
    counts = ""
    if len(en) != len(tr):
        counts = ("%s has %d headings, %s has %d (paired in order, the headings "
                  "below the missing one shift; see the list): "
                  % (english, len(en), translated, len(tr)))
    for i in range(max(len(en), len(tr))):
        if i >= len(en):
            level, line, text = tr[i]
            return counts + ("%s:%d: heading %r (level %d) has no counterpart in %s, which has "
                    "only %d headings" % (translated, line, text, level, english, len(en)))
        if i >= len(tr):
            level, line, text = en[i]
            return counts + ("%s:%d: heading %r (level %d) has no counterpart in %s, which has "
                    "only %d headings" % (english, line, text, level, translated, len(tr)))
        (en_level, en_line, en_text), (tr_level, tr_line, tr_text) = en[i], tr[i]
        if en_level != tr_level:
            return counts + ("heading %d differs in level: %s:%d %r (level %d) against %s:%d %r "
                    "(level %d)" % (i + 1, english, en_line, en_text, en_level,
                                    translated, tr_line, tr_text, tr_level))
        if CODE_SPAN.findall(en_text) != CODE_SPAN.findall(tr_text):
            return counts + ("heading %d differs in its code spans: %s:%d %r against %s:%d %r"
                    % (i + 1, english, en_line, en_text, translated, tr_line, tr_text))
    return None


def side_by_side(en, tr):
    rows = []
    for i in range(max(len(en), len(tr))):
        left = en[i][2] if i < len(en) else "-"
        right = tr[i][2] if i < len(tr) else "-"
        rows.append("  %2d  %-40s  %s" % (i + 1, left, right))
    return "\n".join(rows)


def links_to(text, target):
    """Whether the page has a Markdown link to target (a path relative to
    the page, as a reader would follow it), an #anchor allowed."""
    return re.search(r"\]\(\s*(\./)?%s(#[^)\s]*)?\s*\)" % re.escape(target), text) is not None


def relative(source, target):
    """target's path as a link on the page at source."""
    return os.path.relpath(target, os.path.dirname(source) or ".")


class DocsTranslations(unittest.TestCase):
    def test_headings_match(self):
        for english, translated in PAIRS:
            with self.subTest(page=translated):
                en, _, en_open = structure(read(english))
                tr, _, tr_open = structure(read(translated))
                self.assertFalse(en_open, "%s: a ``` fence is never closed" % english)
                self.assertFalse(tr_open, "%s: a ``` fence is never closed" % translated)
                problem = first_difference(en, tr, english, translated)
                if problem:
                    self.fail("%s\nthe headings side by side:\n%s"
                              % (problem, side_by_side(en, tr)))

    def test_code_blocks_match(self):
        for english, translated in PAIRS:
            with self.subTest(page=translated):
                _, en, _ = structure(read(english))
                _, tr, _ = structure(read(translated))
                self.assertEqual(en, tr, "%s has %d fenced code blocks, %s has %d"
                                 % (english, en, translated, tr))

    def test_translation_made_from_current_headings(self):
        for english, translated in PAIRS:
            with self.subTest(page=translated):
                en, _, _ = structure(read(english))
                head = "\n".join(read(translated).splitlines()[:5])
                found = FINGERPRINT.search(head)
                self.assertIsNotNone(found, "%s: no <!-- en-headings: ... --> comment in its "
                                     "first 5 lines; add <!-- en-headings: %s -->"
                                     % (translated, fingerprint(en)))
                self.assertEqual(
                    found.group(1), fingerprint(en),
                    "%s's headings changed since %s was translated from them (recorded %s, now "
                    "%s): bring the translation's headings in step, then record "
                    "<!-- en-headings: %s -->; the English headings now:\n%s"
                    % (english, translated, found.group(1), fingerprint(en), fingerprint(en),
                       "\n".join("  " + words for _, _, words in en)))

    def test_pages_link_each_other(self):
        for english, translated in PAIRS:
            with self.subTest(page=translated):
                en_text, tr_text = read(english), read(translated)
                self.assertTrue(links_to(en_text, relative(english, translated)),
                                "%s does not link %s (as %s)"
                                % (english, translated, relative(english, translated)))
                self.assertTrue(links_to(tr_text, relative(translated, english)),
                                "%s does not link %s (as %s)"
                                % (translated, english, relative(translated, english)))

    def test_every_translation_is_listed(self):
        # A page under docs/zh-CN/ missing from PAIRS would drift unchecked.
        listed = {translated for _, translated in PAIRS}
        folder = os.path.join(SOURCE_DIR, "docs", "zh-CN")
        pages = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in pages:
            if name.endswith(".md"):
                self.assertIn("docs/zh-CN/" + name, listed,
                              "docs/zh-CN/%s is not in PAIRS" % name)


if __name__ == "__main__":
    unittest.main()
