"""Run-length codes that annotation tools store masks in: COCO's counts (and its compressed string) and Label Studio's
bit-packed brush RLE. Decoders raise ValueError on damaged input; callers name the file."""

from __future__ import annotations

import numpy as np

# Label Studio's brush RLE (its `rle-pack` codec): a 32-bit value count, the word size - 1 (5 bits), four run-length
# field widths - 1 (4 bits each), then chunks: 1 bit (1 = one word repeated, 0 = that many literal words), 2 bits
# choosing a field width, the run length - 1 in that many bits, then the word(s). Bits are read MSB first.
LS_RUN_BITS = (3, 4, 8, 16)  # the field widths Label Studio's encoders write


def coco_counts(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> COCO's uncompressed counts: alternating 0/1 run lengths in column-major order, 0-runs first."""
    flat = np.asarray(mask, bool).ravel(order='F')
    if flat.size == 0:
        return [0]
    edges = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(edges).tolist()
    return [0] + runs if flat[0] else runs


def coco_mask(counts, size) -> np.ndarray:
    """COCO counts (a list, or the compressed string) and size [H, W] -> (H, W) bool."""
    if isinstance(counts, str):
        counts = coco_counts_from_string(counts)
    h, w = (int(v) for v in size)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise ValueError('RLE counts must be non-negative integers')
    if sum(counts) != h * w:
        raise ValueError(f'RLE counts add up to {sum(counts)} pixels, its size {h}x{w} has {h * w}')
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape(w, h).T


def coco_string(counts) -> str:
    """Counts -> COCO's compressed RLE string (what pycocotools writes): each count minus the count two before it
    (from the fourth on), in 5-bit groups, low first, 0x20 marking 'more groups follow', each group + 48 as a char."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - int(counts[i - 2]) if i > 2 else int(count)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # floor shift: a negative difference ends when only sign bits are left
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | (0x20 if more else 0)) + 48))
    return ''.join(out)


def coco_counts_from_string(text: str) -> list[int]:
    """COCO's compressed RLE string -> counts (the inverse of `coco_string`)."""
    counts, pos = [], 0
    while pos < len(text):
        x, shift, more = 0, 0, True
        while more:
            if pos == len(text):
                raise ValueError('compressed RLE string ends inside a count')
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f'compressed RLE string holds {text[pos]!r}, outside its alphabet (0 to o)')
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and c & 0x10:
                x -= 1 << shift  # the last group's top bit is the sign
        counts.append(x + counts[-2] if len(counts) > 2 else x)
    return counts


def ls_encode(values, word_size: int = 8, run_bits=LS_RUN_BITS) -> list[int]:
    """1-D unsigned ints (Label Studio stores a brush as its (H, W, 4) RGBA pixels, flattened) -> brush RLE bytes
    as a list of ints, the form of Label Studio's JSON `value.rle`. Repeats become run chunks, stretches of
    distinct values literal chunks, as Label Studio's own encoders do."""
    values = np.asarray(values).ravel()
    if values.size and (values.min() < 0 or int(values.max()) >= 1 << word_size):
        raise ValueError(f'values must fit {word_size} bits')
    longest = 1 << max(run_bits)
    bits = [f'{values.size:032b}', f'{word_size - 1:05b}'] + [f'{b - 1:04b}' for b in run_bits]

    def length(n: int) -> str:
        slot = next(i for i, b in enumerate(run_bits) if n <= 1 << b)
        return f'{slot:02b}{n - 1:0{run_bits[slot]}b}'

    def flush(literal: list) -> None:
        for i in range(0, len(literal), longest):
            part = literal[i : i + longest]
            bits.append('0' + length(len(part)) + ''.join(f'{v:0{word_size}b}' for v in part))
        literal.clear()

    literal: list[int] = []
    edges = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1, [values.size]]) if values.size else []
    for start, stop in zip(edges[:-1], edges[1:]):
        value, n = int(values[start]), int(stop - start)
        if n == 1:
            literal.append(value)
            continue
        flush(literal)
        for m in [longest] * (n // longest) + ([n % longest] if n % longest else []):
            bits.append('1' + length(m) + f'{value:0{word_size}b}')
    flush(literal)
    text = ''.join(bits)
    text += '0' * (-len(text) % 8)
    return list(int(text, 2).to_bytes(len(text) // 8, 'big'))


def ls_decode(data) -> np.ndarray:
    """Brush RLE bytes (a list of ints) -> the 1-D uint32 values it holds."""
    if not isinstance(data, (list, tuple)) or not all(isinstance(b, int) and 0 <= b < 256 for b in data):
        raise ValueError('brush RLE must be a list of byte values (0-255)')
    stream = ''.join(f'{b:08b}' for b in data)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(stream):
            raise ValueError(f'brush RLE ends early ({len(data)} bytes)')
        pos += n
        return int(stream[pos - n : pos], 2)

    num = read(32)
    word_size = read(5) + 1
    run_bits = [read(4) + 1 for _ in range(4)]
    if num > 1 << 28:
        raise ValueError(f'brush RLE claims {num} values, more than any image holds')
    out = np.zeros(num, np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        n = read(run_bits[read(2)]) + 1
        if repeat:
            # Label Studio's own decoders clip a run that goes past the end rather than fail: so does this.
            out[i : i + n] = read(word_size)
        else:  # n words side by side: read them at once
            first = pos
            read(n * word_size)
            words = np.frombuffer(stream[first:pos].encode(), np.uint8).reshape(n, word_size) - ord('0')
            out[i : i + n] = (words.astype(np.uint64) << np.arange(word_size - 1, -1, -1, dtype=np.uint64)).sum(1)[
                : num - i
            ]
        i += n
    return out
