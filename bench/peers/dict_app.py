"""The dict workload as a WSGI app, for the side-by-side benchmark (bench/peers/run.py).

The same routes and answers as modules/dict, at the same URLs as mphost serves them
(/m/dict/prefix, /m/dict/lookup, /m/dict/suggest, /m/dict/stats), so one wrk script drives all
three systems. The data is built at import, as a preforking server's master would do it before
forking (gunicorn --preload, uWSGI without --lazy-apps):

  WORDS  the sorted list of distinct words (bytes), from dict_data.words();
  INDEX  a dict {word: True} for /lookup.

Environment: MP_PEERS_WORDS (default /usr/share/dict/words), MP_PEERS_SYNTHETIC_MB (default 0).
Stdlib only; the workers' concurrency (gevent, processes) comes from the server.
"""

import bisect
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dict_data  # noqa: E402

_t0 = time.monotonic()
_timings = {}
WORDS = dict_data.words(os.environ.get('MP_PEERS_WORDS', '/usr/share/dict/words'),
                        int(os.environ.get('MP_PEERS_SYNTHETIC_MB', '0')), _timings)
_t1 = time.monotonic()
INDEX = dict.fromkeys(WORDS, True)
STATS_BODY = b'{"words":%d,"bytes":%d}' % (len(WORDS), sum(map(len, WORDS)))
print('dict_app: pid=%d words=%d generate_s=%.1f sort_s=%.1f dict_s=%.1f total_s=%.1f' %
      (os.getpid(), len(WORDS), _timings['generate'], _timings['sort'],
       time.monotonic() - _t1, time.monotonic() - _t0), file=sys.stderr, flush=True)

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
MAX_SUGGEST_QUERY_BYTES = 256
ROUTES = '/prefix /lookup /suggest /stats'
_STATUS = {200: '200 OK', 400: '400 Bad Request', 404: '404 Not Found',
           405: '405 Method Not Allowed', 500: '500 Internal Server Error'}

# ---- JSON strings, as modules/dict/json.cc writes them -------------------------------------

_NEEDS_CARE = re.compile(rb'[\x00-\x1f"\\\x80-\xff]')
_ESCAPES = {0x22: b'\\"', 0x5C: b'\\\\', 0x0A: b'\\n', 0x0D: b'\\r', 0x09: b'\\t', 0x08: b'\\b',
            0x0C: b'\\f'}


def _utf8_length(s, i):
    """Length of the well-formed UTF-8 sequence at s[i] (Unicode table 3-7), or 0."""
    c = s[i]
    left = len(s) - i

    def cont(k, lo=0x80, hi=0xBF):
        return k < left and lo <= s[i + k] <= hi

    if 0xC2 <= c <= 0xDF:
        return 2 if cont(1) else 0
    if c == 0xE0:
        return 3 if cont(1, 0xA0, 0xBF) and cont(2) else 0
    if 0xE1 <= c <= 0xEC or c in (0xEE, 0xEF):
        return 3 if cont(1) and cont(2) else 0
    if c == 0xED:
        return 3 if cont(1, 0x80, 0x9F) and cont(2) else 0
    if c == 0xF0:
        return 4 if cont(1, 0x90, 0xBF) and cont(2) and cont(3) else 0
    if 0xF1 <= c <= 0xF3:
        return 4 if cont(1) and cont(2) and cont(3) else 0
    if c == 0xF4:
        return 4 if cont(1, 0x80, 0x8F) and cont(2) and cont(3) else 0
    return 0


def json_string(s):
    """`s` (bytes) as a JSON string: escapes, well-formed UTF-8 kept, other bytes \\ufffd."""
    if not _NEEDS_CARE.search(s):
        return b'"' + s + b'"'
    out = bytearray(b'"')
    i = 0
    while i < len(s):
        c = s[i]
        if c >= 0x80:
            n = _utf8_length(s, i)
            if n == 0:
                out += b'\\ufffd'
                i += 1
            else:
                out += s[i:i + n]
                i += n
            continue
        if c in _ESCAPES:
            out += _ESCAPES[c]
        elif c < 0x20:
            out += b'\\u00%02x' % c
        else:
            out.append(c)
        i += 1
    out += b'"'
    return bytes(out)


def json_error(message):
    return b'{"error":' + json_string(message) + b'}'


# ---- query parameters, as modules/dict/query.cc and mp::Call::QueryParam ----------------------

_HEX = {ord(c): int(c, 16) for c in '0123456789abcdefABCDEF'}


def percent_decode(raw):
    """bytes -> bytes, or None for a '%' not followed by two hex digits. '+' is a space."""
    if b'%' not in raw and b'+' not in raw:
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x2B:
            out.append(0x20)
        elif c == 0x25:
            if i + 2 >= n:
                return None
            hi, lo = _HEX.get(raw[i + 1]), _HEX.get(raw[i + 2])
            if hi is None or lo is None:
                return None
            out.append(hi * 16 + lo)
            i += 2
        else:
            out.append(c)
        i += 1
    return bytes(out)


def query_param(query, key):
    """The raw value of the first `key=` pair (b'' for a bare key), or None."""
    for pair in query.split(b'&'):
        name, eq, value = pair.partition(b'=')
        if name == key:
            return value if eq else b''
    return None


def parse_limit(decoded):
    if decoded is None:
        return DEFAULT_LIMIT
    if not decoded or not decoded.isdigit() or not decoded.isascii():
        return None
    return min(int(decoded), MAX_LIMIT)


class _Answered(Exception):
    """An error answer, raised by a parameter helper."""

    def __init__(self, status, body):
        super().__init__(status)
        self.status, self.body = status, body


def _param(query, key, required):
    raw = query_param(query, key)
    if raw is None:
        if required:
            raise _Answered(400, json_error(b"dict: missing parameter '" + key + b"'"))
        return None
    value = percent_decode(raw)
    if value is None:
        raise _Answered(400, json_error(b"dict: parameter '" + key +
                                        b"' has a bad percent-encoding (use %XX)"))
    return value


def _limit(query):
    limit = parse_limit(_param(query, b'limit', False))
    if limit is None:
        raise _Answered(400, json_error(
            b"dict: parameter 'limit' must be a whole number (at most %d words are returned)" %
            MAX_LIMIT))
    return limit


# ---- /suggest: the same trie walk as modules/dict/suggest.cc ----------------------------------

_K = 2
_INF = _K + 1


class _TrieWalk:
    def __init__(self, words, query, limit):
        self.words, self.query, self.n, self.limit = words, query, len(query), limit
        self.rows = [[_INF] * (self.n + 2) for _ in range(self.n + _K + 1)]
        self.path = bytearray(self.n + _K + 1)
        self.found = ([], [], [])
        self.max_distance = _K
        self.wanted_far = 0
        self.done = False

    def run(self):
        if self.limit == 0 or not self.words:
            return []
        row0 = self.rows[0]
        for j in range(min(self.n, _K) + 1):
            row0[j] = j
        if _K + 1 <= self.n:
            row0[_K + 1] = _INF
        self.max_distance = _K - 1
        self.visit(0, 0, len(self.words))
        near = min(self.limit, len(self.found[0]) + len(self.found[1]))
        if near < self.limit:
            self.max_distance = _K
            self.wanted_far = self.limit - near
            self.visit(0, 0, len(self.words))
        out = []
        for d in range(_K + 1):
            for w in self.found[d]:
                if len(out) == self.limit:
                    return out
                out.append((w, d))
        return out

    def record(self, w, d):
        if self.max_distance < _K:
            if len(self.found[d]) < self.limit:
                self.found[d].append(w)
        elif d == _K:
            self.found[d].append(w)
            if len(self.found[d]) >= self.wanted_far:
                self.done = True

    def compute_row(self, i):
        lo, hi = max(0, i - _K), min(self.n, i + _K)
        if lo > hi:
            return _INF
        cur, prev = self.rows[i], self.rows[i - 1]
        prev2 = self.rows[i - 2] if i >= 2 else None
        c = self.path[i - 1]
        c_before = self.path[i - 2] if i >= 2 else 0
        q = self.query
        if lo > 0:
            cur[lo - 1] = _INF
        row_min = _INF
        for j in range(lo, hi + 1):
            if j == 0:
                v = i
            else:
                qj = q[j - 1]
                v = prev[j - 1] + (qj != c)
                v = min(v, prev[j] + 1, cur[j - 1] + 1)
                if prev2 is not None and j >= 2 and c == q[j - 2] and c_before == qj:
                    v = min(v, prev2[j - 2] + 1)
            cur[j] = min(v, _INF)
            row_min = min(row_min, cur[j])
        if hi + 1 <= self.n:
            cur[hi + 1] = _INF
        return row_min

    def run_end(self, first, hi, depth):
        words = self.words
        c = words[first][depth]
        inside, outside, step = first, hi, 1
        while True:
            probe = first + step
            if probe >= hi:
                break
            if words[probe][depth] != c:
                outside = probe
                break
            inside = probe
            step *= 2
        while outside - inside > 1:
            mid = inside + (outside - inside) // 2
            if words[mid][depth] == c:
                inside = mid
            else:
                outside = mid
        return outside

    def visit(self, depth, lo, hi):
        if len(self.words[lo]) == depth:
            if abs(depth - self.n) <= _K:
                d = self.rows[depth][self.n]
                if d <= self.max_distance:
                    self.record(lo, d)
                if self.done:
                    return
            lo += 1
        if depth + 1 > self.n + _K:
            return
        while lo < hi and not self.done:
            end = self.run_end(lo, hi, depth)
            self.path[depth] = self.words[lo][depth]
            if self.compute_row(depth + 1) <= self.max_distance:
                self.visit(depth + 1, lo, end)
            lo = end


# ---- routes --------------------------------------------------------------------------------

def _prefix(query):
    q = _param(query, b'q', True)
    limit = _limit(query)
    i = bisect.bisect_left(WORDS, q)
    parts = []
    for w in WORDS[i:i + limit]:
        if not w.startswith(q):
            break
        parts.append(json_string(w))
    return 200, b'{"q":' + json_string(q) + b',"words":[' + b','.join(parts) + b']}'


def _lookup(query):
    w = _param(query, b'w', True)
    found = w in INDEX
    return (200 if found else 404,
            b'{"w":' + json_string(w) + (b',"found":true}' if found else b',"found":false}'))


def _suggest(query):
    w = _param(query, b'w', True)
    limit = _limit(query)
    if len(w) > MAX_SUGGEST_QUERY_BYTES:
        return 400, json_error(b"dict: parameter 'w' is longer than %d bytes; /suggest does not "
                               b"search for it" % MAX_SUGGEST_QUERY_BYTES)
    items = [b'{"word":' + json_string(WORDS[i]) + b',"distance":%d}' % d
             for i, d in _TrieWalk(WORDS, w, limit).run()]
    return 200, b'{"w":' + json_string(w) + b',"suggestions":[' + b','.join(items) + b']}'


def _stats(query):
    return 200, STATS_BODY


_HANDLERS = {b'/prefix': _prefix, b'/lookup': _lookup, b'/suggest': _suggest, b'/stats': _stats}


def _host_error(message, module=None):
    """mphost's own error shape (host/json.cc), for paths that never reach the module."""
    body = b'{"error":' + json_string(message)
    if module is not None:
        body += b',"module":' + json_string(module)
    return body + b'}\n'


def _dispatch(method, path, query):
    if path == b'/..' or b'/../' in path or path.endswith(b'/..'):
        return 400, _host_error(b"path contains a '..' segment"), ()
    if not path.startswith(b'/m/'):
        return 404, _host_error(b'no route for ' + path + b'; modules are under /m/<module>/'), ()
    module, slash, rest = path[3:].partition(b'/')
    if module != b'dict':
        return 404, _host_error(b"no module named '" + module + b"'", module), ()
    route = slash + rest if slash else b'/'
    handler = _HANDLERS.get(route)
    if handler is None:
        return 404, json_error(b'dict: no route ' + route + b'; routes: ' + ROUTES.encode()), ()
    if method not in (b'GET', b'HEAD'):
        return (405, json_error(b'dict: ' + route + b' answers GET, not ' + method),
                (('Allow', 'GET, HEAD'),))
    try:
        status, body = handler(query)
    except _Answered as e:
        status, body = e.status, e.body
    return status, body, ()


def application(environ, start_response):
    # The raw request target (gunicorn: RAW_URI, uWSGI: REQUEST_URI): mphost routes on the
    # target as received, before any percent-decoding.
    target = environ.get('RAW_URI') or environ.get('REQUEST_URI')
    if target:
        path = target.partition('?')[0].encode('latin-1')
    else:
        path = environ.get('PATH_INFO', '').encode('latin-1')
    query = environ.get('QUERY_STRING', '').encode('latin-1')
    status, body, extra = _dispatch(environ['REQUEST_METHOD'].encode('latin-1'), path, query)
    headers = [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))]
    headers.extend(extra)
    start_response(_STATUS[status], headers)
    return [body]
