"""The dict workload's word list, exactly as modules/dict builds it (stdlib only).

words(path, synthetic_mb) returns the sorted (byte-wise) list of distinct non-empty words of
the file (one per line, a trailing '\\r' stripped) plus `synthetic_mb` MiB of generated words:
the same list as the dict module's heap (modules/dict/README.md, "The synthetic generator").

The generator is splitmix64; modules/dict/README.md gives a 12-line reference in Python. That
reference makes about ten 64-bit mixes per word in interpreted code (about 0.9 s per MiB of
words here). synthetic() below produces the identical list ~3x faster with a plain-Python
trick: the k-th splitmix output depends only on k, so a block of outputs is computed at once,
each value in its own 192-bit lane of one big integer (multiplying the big integer by a 64-bit
constant multiplies every lane without carries crossing lanes; shifts are masked per lane; the
remainders mod 26 and mod 9 use exact reciprocal multiplication). synthetic_reference() is the
README's code, kept for the check in check_generator().
"""

import time

_M = (1 << 64) - 1
_SEED = 0x6D70686F7374  # "mphost"
_GAMMA = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def synthetic_reference(mb):
    """modules/dict/README.md's generator, verbatim in behaviour (slow)."""
    state, total, out = _SEED, 0, []

    def nxt():
        nonlocal state
        state = (state + _GAMMA) & _M
        z = state
        z = ((z ^ (z >> 30)) * _C1) & _M
        z = ((z ^ (z >> 27)) * _C2) & _M
        return z ^ (z >> 31)

    while total < int(mb * (1 << 20)):
        n = 4 + nxt() % 9
        out.append(bytes(ord('a') + nxt() % 26 for _ in range(n)))
        total += n
    return out


def synthetic(mb, block=1 << 14):
    """The generated words in generation order (with duplicates), identical to
    synthetic_reference(mb). `mb` may also be a fraction (key samples)."""
    lane = 24  # bytes per lane: a 64-bit value times a 65-bit constant fits in 192 bits
    one = int.from_bytes((b'\x01' + b'\x00' * (lane - 1)) * block, 'little')  # 1 in each lane
    m64 = one * _M  # 2^64 - 1 in each lane
    # floor(v / d) == (v * m) >> s for every v < 2^64 (Granlund-Montgomery, l = ceil(log2 d)).
    m26, s26 = -(-(1 << 69) // 26), 69
    m9, s9 = -(-(1 << 68) // 9), 68
    # Lane i holds (i + 1) * GAMMA: the state of output k + i is SEED + (k + i + 1) * GAMMA.
    steps = int.from_bytes(b''.join(((i + 1) * _GAMMA & _M).to_bytes(lane, 'little')
                                    for i in range(block)), 'little')
    to_letter = bytes((97 + i) & 255 for i in range(256))
    to_length = bytes((4 + i) & 255 for i in range(256))
    limit = int(mb * (1 << 20))
    out = []
    append = out.append
    total = produced = pos = 0
    letters = lengths = b''
    while total < limit:
        st = steps + ((_SEED + produced * _GAMMA) & _M) * one
        st -= ((st >> 64) & one) << 64  # mod 2^64 per lane (each sum is below 2^65)
        z = st ^ ((st >> 30) & m64)
        z = (z * _C1) & m64
        z ^= (z >> 27) & m64
        z = (z * _C2) & m64
        z ^= (z >> 31) & m64
        r = (z - (((z * m26) >> s26) & m64) * 26) + ((z - (((z * m9) >> s9) & m64) * 9) << 8)
        raw = r.to_bytes(block * lane, 'little')
        produced += block
        # Byte 0 of each lane: value % 26; byte 1: value % 9. Any output may start a word (its
        # length) or be one of its letters; the walk below decides which.
        letters = letters[pos:] + raw[0::lane].translate(to_letter)
        lengths = lengths[pos:] + raw[1::lane].translate(to_length)
        pos = 0
        end = len(letters) - 13  # a whole word (1 + at most 12 outputs) is available
        words_before = len(out)
        while pos < end:
            n = lengths[pos]
            pos += 1
            append(letters[pos:pos + n])
            pos += n
        total += pos - (len(out) - words_before)
    # The reference stops at the first word that takes the total to `limit`: drop the rest.
    while out and total - len(out[-1]) >= limit:
        total -= len(out.pop())
    return out


def real_words(path):
    with open(path, 'rb') as f:
        lines = f.read().split(b'\n')
    return [w for w in (line.removesuffix(b'\r') for line in lines) if w]


def words(path, synthetic_mb, timings=None):
    """The sorted list of distinct words. `timings`, if a dict, receives the seconds spent."""
    t0 = time.monotonic()
    real = real_words(path)
    generated = synthetic(synthetic_mb) if synthetic_mb else []
    t1 = time.monotonic()
    distinct = set(real)
    distinct.update(generated)
    del real, generated
    result = sorted(distinct)
    t2 = time.monotonic()
    if timings is not None:
        timings['generate'] = t1 - t0
        timings['sort'] = t2 - t1
    return result


def check_generator(mb=2):
    """True if synthetic(mb) equals the reference generator's output."""
    return synthetic(mb) == synthetic_reference(mb)


if __name__ == '__main__':
    import sys
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print('identical to the reference:', check_generator(mb))
