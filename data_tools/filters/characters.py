"""What each code point is to the filters, as bits of one byte per code point (built once per process).

SPECIAL: not a letter or combining mark (Unicode categories L* and M*), as ROOTS' filters count them.
SPACE: whitespace (str.isspace). UNSPACED: a script written without spaces (Han, Hiragana, Katakana), each
character a word of its own. LINE_BREAK and INVISIBLE: what normalization turns into "\\n" or removes.
"""

from __future__ import annotations

import functools
import sys
import unicodedata

import numpy as np

SPECIAL, SPACE, UNSPACED, LINE_BREAK, INVISIBLE = 1, 2, 4, 8, 16

UNSPACED_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))
LINE_BREAKS = "\r\x0b\x0c\x85\u2028\u2029"  # "\r" before "\n" makes one break with it
INVISIBLES = ("".join(map(chr, range(0x00, 0x09))) + "".join(map(chr, range(0x0E, 0x20)))
              + "".join(chr(code) for code in range(0x7F, 0xA0) if code != 0x85) + "\u00ad\u200b\u2060\ufeff")

# Planes 4-13 are unassigned and planes 15-16 private use: special, without asking unicodedata a million times.
_PLANES_WITH_LETTERS = (range(0x00000, 0x40000), range(0xE0000, 0xF0000))


@functools.cache
def character_classes() -> np.ndarray:
    """For every code point, its class bits."""
    classes = np.full(sys.maxunicode + 1, SPECIAL, dtype=np.uint8)
    for plane in _PLANES_WITH_LETTERS:
        classes[plane.start:plane.stop] = [SPECIAL if unicodedata.category(chr(code))[0] not in "LM" else 0
                                           for code in plane]
    classes[[code for code in range(0x3001) if chr(code).isspace()]] |= SPACE  # U+3000 is the last space
    for first, last in UNSPACED_RANGES:
        classes[first:last + 1] |= UNSPACED
    classes[list(map(ord, LINE_BREAKS))] |= LINE_BREAK
    classes[list(map(ord, INVISIBLES))] |= INVISIBLE
    return classes
