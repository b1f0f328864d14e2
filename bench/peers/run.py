#!/usr/bin/env python3
"""bench/peers/run.py: mphost side by side with gunicorn+gevent and uWSGI (issue 8).

The three systems serve the same dict workload at the same URLs: mphost runs modules/dict,
gunicorn (-k gevent --preload) and uWSGI (--http-socket, --master, preforked) run
bench/peers/dict_app.py, which builds the identical word list at import. For each system and
worker count the driver starts the system, measures, and stops everything it started:

  * time from start until the first answer (GET /m/dict/stats = 200);
  * total PSS and USS of all the system's processes (the started process and all its
    descendants, from /proc/PID/smaps_rollup) right after start, then after every tenth of
    100k random /prefix calls and of 100k random /lookup calls (random keys touch objects all
    over the data: in a forked Python server every touch writes a reference count and copies
    the page);
  * requests/s and p50/p99 latency with `wrk --latency` (fixed threads, connections and
    duration) on /prefix?q=ab, on random /lookup keys and on the trivial /stats;
  * with 1 worker: the answers to a list of requests, compared byte for byte with mphost's;
    then the time from SIGKILL of the only worker until a request is answered 200 again.

Writes results.json (every raw figure), results.md (the tables) and, with gnuplot, the plots.
Every loop is bounded in count and time; every process started is stopped by pid (its own
session and process group), also on failure, and the run checks that none is left.

  bench/peers/run.py [--build-dir build] [--out DIR] [--plots DIR]   # full run (~25 min)
  bench/peers/run.py --quick                                          # harness check (<2 min)

Stdlib only. Needs the Debian packages below (installed with apt-get if missing, as root).
"""

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import dict_data  # noqa: E402

PEER_PACKAGES = ['gunicorn', 'python3-gevent', 'uwsgi', 'uwsgi-plugin-python3', 'wrk',
                 'gnuplot-nox']
SYSTEMS = ['mphost', 'mphost-spin0', 'gunicorn', 'uwsgi']
LABELS = {'mphost': 'mphost', 'mphost-spin0': 'mphost spin 0', 'gunicorn': 'gunicorn+gevent',
          'uwsgi': 'uWSGI'}
# mphost-spin0: mphost with "spinIterations": 0, which docs/operations.md recommends when
# workers outnumber cores; measured for requests/s only, next to mphost's defaults.
RPS_ONLY = {'mphost-spin0'}
BUILD_LOCK = '/tmp/mphost-building.lock'
RUN_LOCK = '/tmp/peers-full-run.lock'

# The profiles. A full run takes ~25 minutes on 2 vCPUs; --quick checks the harness only.
FULL = dict(synthetic_mb=80, workers=[2, 8], memory_workers=[2, 8, 64], calls=100000,
            segments=10, duration=8, reps=3, threads=2, connections=64, start_timeout=900)
QUICK = dict(synthetic_mb=1, workers=[2], memory_workers=[2], calls=2000, segments=2,
             duration=1, reps=1, threads=2, connections=16, start_timeout=60)

# Routes measured for requests/s: (name, URL or keys file, wrk script).
RPS_ROUTES = [('prefix', '/m/dict/prefix?q=ab'), ('lookup', 'random keys'),
              ('stats', '/m/dict/stats')]

# Requests whose answers (status, Content-Type, Allow, body) must be identical on all three.
COMPARE = [
    ('GET', '/m/dict/prefix?q=ab'), ('GET', '/m/dict/prefix?q=ab&limit=3'),
    ('GET', '/m/dict/prefix?q=%C3%A9c&limit=3'), ('GET', '/m/dict/prefix?q='),
    ('GET', '/m/dict/prefix?q=ab&limit=0'), ('GET', '/m/dict/prefix?q=ab&limit=abc'),
    ('GET', '/m/dict/prefix?q=zzz&limit=99999'), ('GET', '/m/dict/prefix?q=%zz'),
    ('GET', '/m/dict/prefix'), ('GET', '/m/dict/prefix?limit=2&q=Z'),
    ('GET', '/m/dict/prefix?q=a+b'), ('GET', '/m/dict/prefix?q=ab&limit='),
    ('GET', '/m/dict/lookup?w=word'), ('GET', '/m/dict/lookup?w=caf%C3%A9'),
    ('GET', '/m/dict/lookup?w=wrod'), ('GET', '/m/dict/lookup?w='), ('GET', '/m/dict/lookup'),
    ('GET', '/m/dict/lookup?w=%ff%e0%a0x'), ('GET', '/m/dict/lookup?w=a%22b%5Cc%01%0a%7f'),
    ('GET', '/m/dict/lookup?w=sxkfmdr'),
    ('GET', '/m/dict/suggest?w=wrod'), ('GET', '/m/dict/suggest?w=acommodate'),
    ('GET', '/m/dict/suggest?w=speling&limit=20'), ('GET', '/m/dict/suggest?w='),
    ('GET', '/m/dict/suggest?w=xqzjv&limit=3'), ('GET', '/m/dict/suggest?w=wrod&limit=0'),
    ('GET', '/m/dict/suggest?w=' + 'a' * 300), ('GET', '/m/dict/suggest?w=caf'),
    ('GET', '/m/dict/stats'), ('GET', '/m/dict/nope'), ('GET', '/m/dict'),
    ('GET', '/m/other/x'), ('GET', '/x'), ('GET', '/m/dict/../x'),
    ('POST', '/m/dict/prefix?q=ab'), ('DELETE', '/m/dict/stats'), ('POST', '/m/dict/nope'),
]


def log(*args):
    print('[peers %s]' % time.strftime('%H:%M:%S'), *args, file=sys.stderr, flush=True)


class Failure(Exception):
    """The harness cannot go on (a system did not start, a tool is missing...)."""


# ---- processes -----------------------------------------------------------------------------

def _start_time(pid):
    """Field 22 of /proc/PID/stat (start time in ticks), or None if the pid is gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(')') + 2:].split()
    if fields[0] == 'Z':  # a zombie has ended; only its parent's wait is missing
        return None
    return int(fields[19])


def alive(pid, start):
    return _start_time(pid) == start


def children(pid):
    out = []
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return out
    for t in tasks:
        try:
            with open('/proc/%d/task/%s/children' % (pid, t)) as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def tree(root):
    """The root and all its descendants that are alive now."""
    seen, todo = [], [root]
    while todo and len(seen) < 10000:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children(pid))
    return seen


class Processes:
    """Every process the driver started, and every descendant seen, with its start time (so a
    reused pid is never mistaken for ours). stop() ends one started process and its
    descendants; leftovers() lists any still alive."""

    def __init__(self):
        self.known = {}  # pid -> start time
        self.popens = []

    def start(self, argv, logfile, env=None, cwd=None):
        out = open(logfile, 'ab')
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 env=env, cwd=cwd, start_new_session=True)
        finally:
            out.close()
        self.popens.append(p)
        self.note(p.pid)
        return p

    def note(self, pid):
        start = _start_time(pid)
        if start is not None:
            self.known.setdefault(pid, start)

    def note_tree(self, root):
        pids = tree(root)
        for pid in pids:
            self.note(pid)
        return pids

    def _ours(self, pids):
        return [p for p in pids if p in self.known and alive(p, self.known[p])]

    def stop(self, popen, timeout=20.0, graceful=True):
        """graceful: SIGTERM to the started process, then SIGKILL to its process group and to
        every descendant seen if they are not gone within `timeout`; returns True if SIGTERM
        was enough. Not graceful: SIGKILL to the process group and every descendant at once."""
        descendants = self.note_tree(popen.pid) if popen.poll() is None else []
        clean = True
        if popen.poll() is None and not graceful:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)  # the group of our own new session
            for pid in self._ours(descendants):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            popen.wait(30)
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = False
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGKILL)  # the group of our own new session
                popen.wait(10)
        deadline = time.monotonic() + 10
        while self._ours(descendants) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self._ours(descendants):
            clean = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return clean

    def stop_all(self):
        for p in self.popens:
            if p.poll() is None:
                self.stop(p, timeout=10)

    def leftovers(self):
        return sorted(self._ours(list(self.known)))


# ---- measurements --------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def get(port, target, method='GET', timeout=10.0):
    """(status, headers, body) of one request on a fresh connection, or None."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request(method, target, body=b'' if method == 'POST' else None)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def mem_available():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024
    return 0


# A memory run stops early (and says so) rather than drive the machine out of memory.
MIN_AVAILABLE = 2 << 30


def memory(pids):
    """Totals over `pids` from smaps_rollup, in bytes: pss, uss, rss; and how many."""
    total = {'pss': 0, 'uss': 0, 'rss': 0, 'processes': 0}
    for pid in pids:
        try:
            with open('/proc/%d/smaps_rollup' % pid) as f:
                text = f.read()
        except OSError:
            continue
        kb = {}
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                kb[parts[0].rstrip(':')] = int(parts[1])
        total['pss'] += kb.get('Pss', 0) * 1024
        total['uss'] += (kb.get('Private_Clean', 0) + kb.get('Private_Dirty', 0)) * 1024
        total['rss'] += kb.get('Rss', 0) * 1024
        total['processes'] += 1
    return total


class Wrk:
    def __init__(self, cfg, out_dir):
        self.cfg, self.out_dir, self.runs = cfg, out_dir, 0

    def run(self, port, url_or_path, keys=None, stop_after=0, duration=None, seed=1):
        """One wrk run. With `keys`, requests are url_or_path + a random key; with
        `stop_after`, each thread stops after that many responses. Returns wrk's figures."""
        c = self.cfg
        duration = duration or c['duration']
        base = 'http://127.0.0.1:%d' % port
        argv = ['wrk', '-t%d' % c['threads'], '-c%d' % c['connections'], '-d%ds' % duration,
                '--latency']
        if keys:
            argv += ['-s', os.path.join(HERE, 'keys.lua'), base + '/', '--', keys, url_or_path,
                     str(stop_after), str(seed)]
        else:
            argv += ['-s', os.path.join(HERE, 'report.lua'), base + url_or_path]
        self.runs += 1
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        lines, done = [], 0
        deadline = time.monotonic() + duration + 60
        buf = b''
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([p.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(p.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b'\n' in buf:
                        line, buf = buf.split(b'\n', 1)
                        line = line.decode('utf-8', 'replace')
                        lines.append(line)
                        if line == 'WRK_THREAD_DONE':
                            done += 1
                            if done == c['threads']:
                                p.send_signal(signal.SIGINT)  # wrk reports at once
                elif p.poll() is not None:
                    break
        finally:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            p.stdout.close()
        with open(os.path.join(self.out_dir, 'wrk.log'), 'a') as f:
            f.write('$ %s\n%s\n\n' % (' '.join(argv), '\n'.join(lines)))
        for line in lines:
            if line.startswith('WRK_RESULT '):
                r = json.loads(line[len('WRK_RESULT '):])
                r['rps'] = r['requests'] / (r['duration_us'] / 1e6)
                return r
        raise Failure('wrk gave no result: %s' % ' '.join(argv))


# ---- the three systems ---------------------------------------------------------------------

class System:
    """One system under test, started with `workers` worker processes."""

    def __init__(self, name, args, procs, out_dir, workers):
        self.name, self.args, self.procs, self.workers = name, args, procs, workers
        self.dir = tempfile.mkdtemp(prefix='%s-%d-' % (name, workers), dir=out_dir)
        self.port = free_port()
        self.log = os.path.join(self.dir, 'server.log')
        self.popen = None

    def argv(self):
        raise NotImplementedError

    def env(self):
        env = dict(os.environ)
        env['MP_PEERS_SYNTHETIC_MB'] = str(self.args.synthetic_mb)
        env['MP_PEERS_WORDS'] = self.args.words
        return env

    def start(self):
        self.started_at = time.monotonic()
        self.popen = self.procs.start(self.argv(), self.log, env=self.env(), cwd=self.dir)

    def pids(self):
        return self.procs.note_tree(self.popen.pid) if self.popen.poll() is None else []

    def worker_pids(self):
        """The worker processes: the master's children (the Python peers)."""
        return children(self.popen.pid)

    def ready(self):
        return len(self.worker_pids()) == self.workers

    # How the driver stops it. The Python peers get SIGKILL (process group and every
    # descendant): on SIGTERM each worker finalizes the interpreter, and freeing the data
    # writes every object's reference count, so each exiting worker copies the whole data set
    # (with 8 workers the stop took more than 20 s; with 64 it would need several times this
    # machine's RAM). Stopping is not measured.
    graceful_stop = False

    def stop(self):
        return self.procs.stop(self.popen, graceful=self.graceful_stop) if self.popen else True

    def describe(self):
        return ' '.join(self.argv())


class Mphost(System):
    graceful_stop = True  # SIGTERM: mphost drains, stops and reaps its workers and zygote
    extra = {}

    def argv(self):
        b = self.args.build_dir
        s = self.args.synthetic_mb
        config = {
            'listen': '127.0.0.1:%d' % self.port,
            'control': os.path.join(self.dir, 'control.sock'),
            'modules': [{
                'name': 'dict', 'plugin': os.path.join(b, 'modules', 'libdict.so'),
                'workers': self.workers, 'maxWorkers': self.workers,
                'maxHeapMb': 2 * s + 64, 'buildTimeoutMs': 600000,
                'dataFiles': {'words': self.args.words},
                'options': {'synthetic_mb': str(s)}, **self.extra}]}
        path = os.path.join(self.dir, 'mphost.json')
        with open(path, 'w') as f:
            json.dump(config, f, indent=1)
        return [os.path.join(b, 'bin', 'mphost'), '--config', path]

    def mpctl(self, *args):
        argv = [os.path.join(self.args.build_dir, 'bin', 'mpctl'), '--control',
                os.path.join(self.dir, 'control.sock')] + list(args) + ['--json']
        r = subprocess.run(argv, capture_output=True, timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout else None

    def worker_pids(self):
        ps = self.mpctl('ps')
        if not ps:
            return []
        return [w['pid'] for w in ps['workers'] if w.get('state') == 'ready']

    def heap_bytes(self):
        heaps = self.mpctl('heap') or {'heaps': []}
        return sum(h['segment_bytes'] for h in heaps['heaps'] if h.get('current'))


class MphostSpin0(Mphost):
    extra = {'spinIterations': 0}


class Gunicorn(System):
    def argv(self):
        return ['gunicorn', '-k', 'gevent', '--preload', '-w', str(self.workers),
                '-b', '127.0.0.1:%d' % self.port, '--chdir', HERE, 'dict_app:application']


class Uwsgi(System):
    def argv(self):
        return ['uwsgi', '--http-socket', '127.0.0.1:%d' % self.port, '--plugin', 'python3',
                '--master', '--processes', str(self.workers), '--wsgi-file',
                os.path.join(HERE, 'dict_app.py'), '--need-app', '--die-on-term',
                '--disable-logging']


CLASSES = {'mphost': Mphost, 'mphost-spin0': MphostSpin0, 'gunicorn': Gunicorn,
           'uwsgi': Uwsgi}


# ---- the run -------------------------------------------------------------------------------

class Run:
    def __init__(self, args, cfg):
        self.args, self.cfg = args, cfg
        self.procs = Processes()
        self.wrk = Wrk(cfg, args.out)
        self.results = {'profile': 'quick' if args.quick else 'full', 'config': cfg,
                        'systems': {s: {'starts': {}, 'memory': {}, 'rps': {}}
                                    for s in args.systems},
                        'compare': {}, 'replace': {}}
        self.reference = None  # mphost's answers to COMPARE

    def system(self, name, workers):
        return CLASSES[name](name, self.args, self.procs, self.args.out, workers)

    def start(self, sysm):
        """Starts `sysm`, waits for its first answer and for all its workers. Returns the
        seconds from start to the first answer."""
        log('start %s with %d worker(s)' % (sysm.name, sysm.workers))
        sysm.start()
        deadline = sysm.started_at + self.cfg['start_timeout']
        first = None
        while time.monotonic() < deadline:
            if sysm.popen.poll() is not None:
                raise Failure('%s exited with %s during start; see %s' %
                              (sysm.name, sysm.popen.returncode, sysm.log))
            r = get(sysm.port, '/m/dict/stats', timeout=5)
            if r and r[0] == 200:
                first = time.monotonic() - sysm.started_at
                break
            time.sleep(0.02)
        if first is None:
            raise Failure('%s gave no answer within %d s; see %s' %
                          (sysm.name, self.cfg['start_timeout'], sysm.log))
        deadline = time.monotonic() + 120
        while not sysm.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not sysm.ready():
            raise Failure('%s: %d workers did not all start' % (sysm.name, sysm.workers))
        sysm.pids()
        time.sleep(2.0)  # let the last workers finish their own start
        entry = {'first_answer_s': first, 'pids': sysm.pids()}
        if isinstance(sysm, Mphost):
            entry['heap_bytes'] = sysm.heap_bytes()
        with open(sysm.log, errors='replace') as f:
            m = re.search(r'dict_app: pid=\d+ words=(\d+) generate_s=([\d.]+) sort_s=([\d.]+) '
                          r'dict_s=([\d.]+) total_s=([\d.]+)', f.read())
        if m:
            entry['python_load'] = {'words': int(m[1]), 'generate_s': float(m[2]),
                                    'sort_s': float(m[3]), 'dict_s': float(m[4]),
                                    'total_s': float(m[5])}
        self.results['systems'][sysm.name]['starts'][str(sysm.workers)] = entry
        log('  first answer after %.2f s; %d processes' % (first, len(entry['pids'])))
        return first

    def compare(self, sysm):
        answers = []
        for method, target in COMPARE:
            r = get(sysm.port, target, method, timeout=120)
            answers.append(None if r is None else
                           [r[0], r[1].get('content-type'), r[1].get('allow'),
                            r[2].decode('utf-8', 'replace')])
        if sysm.name == 'mphost':
            self.reference = answers
        differ = []
        if self.reference is not None:
            for (method, target), a, b in zip(COMPARE, answers, self.reference):
                if a != b:
                    differ.append({'request': '%s %s' % (method, target), 'got': a,
                                   'mphost': b})
        self.results['compare'][sysm.name] = {
            'requests': len(COMPARE), 'answered': sum(a is not None for a in answers),
            'against_mphost': self.reference is not None, 'differ': differ}
        log('  compare: %d requests, %d differ from mphost' % (len(COMPARE), len(differ)))

    def replace(self, sysm):
        """SIGKILL the only worker; time until a request is answered 200 again."""
        victims = sysm.worker_pids()
        if len(victims) != 1:
            raise Failure('%s: expected 1 worker, found %s' % (sysm.name, victims))
        victim = victims[0]
        before = get(sysm.port, '/m/dict/stats')
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        attempts, other = 0, {}
        ms = None
        while time.monotonic() - t0 < 60 and attempts < 100000:
            attempts += 1
            r = get(sysm.port, '/m/dict/stats', timeout=10)
            if r and r[0] == 200:
                ms = (time.monotonic() - t0) * 1000
                break
            key = str(r[0]) if r else 'no answer'
            other[key] = other.get(key, 0) + 1
            time.sleep(0.001)
        new = sysm.worker_pids()
        self.results['replace'][sysm.name] = {
            'ms': ms, 'attempts': attempts, 'other_answers': other, 'killed_pid': victim,
            'new_workers': new, 'answered_before': before is not None and before[0] == 200}
        log('  replace after SIGKILL: %s ms (%d attempts, other answers %s)' %
            ('%.1f' % ms if ms is not None else 'none', attempts, other))

    def memory_run(self, sysm, keys):
        cfg = self.cfg
        per_segment = cfg['calls'] // cfg['segments']
        stop_after = max(1, per_segment // cfg['threads'])
        samples = []

        def sample(phase, calls, settle):
            time.sleep(settle)
            m = memory(sysm.pids())
            m['root_pss'] = memory([sysm.popen.pid])['pss']
            m.update(phase=phase, calls=calls, t=time.monotonic() - sysm.started_at)
            samples.append(m)
            return m

        sample('start', 0, 0)
        calls = 0
        wrk_runs = []
        for phase, path in (('prefix', '/m/dict/prefix?q='), ('lookup', '/m/dict/lookup?w=')):
            for seg in range(cfg['segments']):
                r = self.wrk.run(sysm.port, path, keys=keys[phase], stop_after=stop_after,
                                 duration=max(120, cfg['duration']), seed=seg + 1)
                calls += r['requests']
                wrk_runs.append({'phase': phase, 'requests': r['requests'], 'rps': r['rps'],
                                 'errors': r['errors']})
                last = seg == cfg['segments'] - 1
                sample(phase, calls, 1.5 if last else 0.3)
                if mem_available() < MIN_AVAILABLE:
                    raise Failure('%s: less than %d MiB of RAM available after %d calls' %
                                  (sysm.name, MIN_AVAILABLE >> 20, calls))
        self.results['systems'][sysm.name]['memory'][str(sysm.workers)] = {
            'samples': samples, 'wrk': wrk_runs}
        first, mid, end = samples[0], samples[cfg['segments']], samples[-1]
        log('  PSS MiB start %.1f, after prefix %.1f, after lookup %.1f (%d calls)' %
            (first['pss'] / 2**20, mid['pss'] / 2**20, end['pss'] / 2**20, calls))

    def rps_run(self, sysm, keys):
        out = {}
        for route, what in RPS_ROUTES:
            reps = []
            for rep in range(self.cfg['reps']):
                if route == 'lookup':
                    r = self.wrk.run(sysm.port, '/m/dict/lookup?w=', keys=keys['lookup'],
                                     seed=100 + rep)
                else:
                    r = self.wrk.run(sysm.port, what)
                reps.append(r)
            out[route] = {
                'rps': statistics.median(r['rps'] for r in reps),
                'p50_us': statistics.median(r['p50_us'] for r in reps),
                'p99_us': statistics.median(r['p99_us'] for r in reps),
                'reps': reps}
            log('  %-7s %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms' %
                (route, out[route]['rps'], out[route]['p50_us'] / 1000,
                 out[route]['p99_us'] / 1000))
        self.results['systems'][sysm.name]['rps'][str(sysm.workers)] = out

    def one(self, name, workers, keys):
        sysm = self.system(name, workers)
        try:
            self.start(sysm)
            if workers == 1:
                self.compare(sysm)
                self.replace(sysm)
            else:
                if workers in self.cfg['memory_workers'] and name not in RPS_ONLY:
                    self.memory_run(sysm, keys)
                if workers in self.cfg['workers']:
                    self.rps_run(sysm, keys)
            if sysm.popen.poll() is not None:
                raise Failure('%s exited during the run; see %s' % (name, sysm.log))
        finally:
            clean = sysm.stop()
            self.results['systems'][name].setdefault('stops', {})[str(workers)] = {
                'graceful': sysm.graceful_stop, 'clean': clean, 'describe': sysm.describe()}

    def all(self, keys):
        counts = [1] + sorted(set(self.cfg['workers']) | set(self.cfg['memory_workers']))
        for workers in counts:
            for name in self.args.systems:
                if name not in RPS_ONLY or workers in self.cfg['workers']:
                    self.one(name, workers, keys)


def make_keys(out_dir, synthetic_mb, words_path, quick):
    """Key files for wrk. lookup: 3/4 hits (words drawn from the generator's first words,
    which are uniform random letters, so they sit all over the sorted list, plus real words),
    1/4 misses (13 random letters); prefix: the first 2-5 letters of generated words."""
    rng = random.Random(8)
    generated = list(dict.fromkeys(dict_data.synthetic(min(synthetic_mb, 1))))
    real = dict_data.real_words(words_path)
    n_gen = min(len(generated), 9000 if quick else 90000)
    hits = generated[:n_gen] + rng.sample(real, min(len(real), n_gen // 9 + 1))
    misses = [bytes(rng.choice(b'abcdefghijklmnopqrstuvwxyz') for _ in range(13))
              for _ in range(len(hits) // 3)]
    lookup = [urllib.parse.quote(w, safe='') for w in hits + misses]
    rng.shuffle(lookup)
    prefix = [w[:rng.randint(2, 5)].decode() for w in generated[:n_gen]]
    rng.shuffle(prefix)
    files = {}
    for name, lines in (('lookup', lookup), ('prefix', prefix)):
        files[name] = os.path.join(out_dir, 'keys-%s.txt' % name)
        with open(files[name], 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return files, {'lookup_keys': len(lookup), 'lookup_hits': len(hits),
                   'lookup_misses': len(misses), 'prefix_keys': len(prefix)}


# ---- setup, environment, report ------------------------------------------------------------

def install_peers():
    def installed(p):
        r = subprocess.run(['dpkg-query', '-W', '-f=${Status}', p], capture_output=True,
                           text=True)
        return r.stdout.strip() == 'install ok installed'

    missing = [p for p in PEER_PACKAGES if not installed(p)]
    if not missing:
        return
    log('installing %s' % ' '.join(missing))
    sudo = [] if os.geteuid() == 0 else ['sudo', '-n']
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    r = subprocess.run(sudo + ['apt-get', 'install', '-y', '-qq', '--no-install-recommends'] +
                       missing, env=env, timeout=900)
    if r.returncode != 0:
        subprocess.run(sudo + ['apt-get', 'update', '-qq'], env=env, timeout=900)
        r = subprocess.run(sudo + ['apt-get', 'install', '-y', '-qq',
                                   '--no-install-recommends'] + missing, env=env, timeout=900)
    if r.returncode != 0:
        raise Failure('could not install %s' % ' '.join(missing))


def environment(args):
    def out(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout + r.stderr).strip()
        except OSError:
            return None

    def pkg(p):
        return out(['dpkg-query', '-W', '-f=${Version}', p])

    cpu = ''
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    with open('/proc/meminfo') as f:
        mem_kb = int(f.readline().split()[1])
    status = out(['git', '-C', REPO, 'status', '--porcelain', '--untracked-files=no'])
    return {
        'commit': out(['git', '-C', REPO, 'rev-parse', 'HEAD']),
        'commit_subject': out(['git', '-C', REPO, 'log', '-1', '--format=%s']),
        'tree_dirty': bool(status),
        'cpus': os.cpu_count(), 'cpu': cpu, 'mem_gib': round(mem_kb / 2**20, 1),
        'kernel': os.uname().release,
        'debian': open('/etc/debian_version').read().strip()
        if os.path.exists('/etc/debian_version') else None,
        'python': sys.version.split()[0],
        'packages': {p: pkg(p) for p in ['gunicorn', 'python3-gevent', 'uwsgi',
                                         'uwsgi-plugin-python3', 'wrk', 'gnuplot-nox']},
        'build_dir': args.build_dir,
    }


def mib(b):
    return b / 2**20


def report(res):
    """results.md: the tables, from results.json's figures only."""
    cfg, env = res['config'], res['environment']
    systems = [s for s in SYSTEMS if s in res['systems']]
    L = []
    L.append('Commit %s (%s)%s; %d vCPUs (%s), %.0f GiB, kernel %s, Debian %s, Python %s.' % (
        (env['commit'] or '?')[:12], env['commit_subject'],
        ', uncommitted changes' if env['tree_dirty'] else '', env['cpus'], env['cpu'],
        env['mem_gib'], env['kernel'], env['debian'], env['python']))
    L.append('Packages: ' + ', '.join('%s %s' % kv for kv in env['packages'].items()) + '.')
    L.append('Data: /usr/share/dict/words + synthetic_mb = %d (%s words, %s bytes of text; the '
             'same list on all three). wrk -t%d -c%d, %d s per run, median of %d runs.' % (
                 cfg['synthetic_mb'], res.get('words', '?'), res.get('bytes', '?'),
                 cfg['threads'], cfg['connections'], cfg['duration'], cfg['reps']))
    L.append('')

    # Requests/s.
    L.append('```')
    L.append('requests/s, p50 and p99 latency (ms); x: mphost\'s requests/s / this '
             'system\'s, with mphost\'s defaults and with spinIterations 0')
    L.append('%-8s %-16s %3s %9s %8s %8s %8s %8s' % ('route', 'system', 'w', 'req/s', 'p50',
                                                       'p99', 'x', 'x spin0'))
    for route, what in RPS_ROUTES:
        label = {'prefix': '/prefix?q=ab', 'lookup': '/lookup (random keys)',
                 'stats': '/stats (trivial)'}[route]
        L.append(label)
        for w in cfg['workers']:
            refs = [res['systems'].get(m, {}).get('rps', {}).get(str(w), {}).get(route)
                    for m in ('mphost', 'mphost-spin0')]
            for s in systems:
                r = res['systems'][s]['rps'].get(str(w), {}).get(route)
                if not r:
                    continue
                ratios = ['' if s.startswith('mphost') or not ref or not r['rps'] else
                          '%.2fx' % (ref['rps'] / r['rps']) for ref in refs]
                L.append('%-8s %-16s %3d %9.0f %8.2f %8.2f %8s %8s' % (
                    '', LABELS[s], w, r['rps'], r['p50_us'] / 1000, r['p99_us'] / 1000,
                    *ratios))
    L.append('```')
    L.append('')

    # Targets on requests/s.
    L.append('```')
    L.append('targets (each route, equal workers): mphost >= 3x uWSGI and >= 5x gunicorn '
             'req/s, with a lower p99')
    for m in ('mphost', 'mphost-spin0'):
        for route, _ in RPS_ROUTES:
            for w in cfg['workers']:
                ref = res['systems'].get(m, {}).get('rps', {}).get(str(w), {}).get(route)
                if not ref:
                    continue
                for s, need in (('uwsgi', 3.0), ('gunicorn', 5.0)):
                    r = res['systems'].get(s, {}).get('rps', {}).get(str(w), {}).get(route)
                    if not r:
                        continue
                    ratio = ref['rps'] / r['rps']
                    p99_lower = ref['p99_us'] < r['p99_us']
                    L.append('  %-13s %-7s %d w vs %-16s %5.2fx (need %.0fx), p99 %s: %s' % (
                        LABELS[m], route, w, LABELS[s], ratio, need,
                        'lower' if p99_lower else 'NOT lower',
                        'met' if ratio >= need and p99_lower else 'NOT met'))
    L.append('```')
    L.append('')

    # Memory.
    L.append('```')
    L.append('total memory of all the system\'s processes (MiB), from /proc/PID/smaps_rollup')
    L.append('%-16s %3s %5s %9s %9s %9s %9s %9s %9s %8s' % (
        'system', 'w', 'procs', 'PSS st', 'PSS pfx', 'PSS lkp', 'USS st', 'USS pfx', 'USS lkp',
        'calls/s'))
    for w in cfg['memory_workers']:
        for s in systems:
            m = res['systems'][s]['memory'].get(str(w))
            if not m:
                continue
            sm = m['samples']
            st, pf, lk = sm[0], sm[cfg['segments']], sm[-1]
            rates = [r['rps'] for r in m['wrk']]
            L.append('%-16s %3d %5d %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %8.0f' % (
                LABELS[s], w, lk['processes'], mib(st['pss']), mib(pf['pss']), mib(lk['pss']),
                mib(st['uss']), mib(pf['uss']), mib(lk['uss']), statistics.median(rates)))
    L.append('st: right after start; pfx: after %d random /prefix calls; lkp: after %d more '
             'random /lookup calls' % (cfg['calls'], cfg['calls']))
    heap = None
    for w in cfg['memory_workers']:
        heap = res['systems'].get('mphost', {}).get('starts', {}).get(str(w), {}).get(
            'heap_bytes', heap)
    if heap:
        L.append('')
        L.append('target: mphost total PSS after the calls <= heap (%.1f MiB) + 1 MiB per '
                 'worker' % mib(heap))
        for w in cfg['memory_workers']:
            m = res['systems']['mphost']['memory'].get(str(w))
            if m:
                last = m['samples'][-1]
                pss, host = last['pss'], last['root_pss']
                limit = heap + w * 2**20
                L.append('  %2d workers: %.1f <= %.1f MiB: %s; total = heap + %.2f MiB per worker, '
                         'of which the supervisor mphost itself is %.1f MiB' % (
                             w, mib(pss), mib(limit), 'met' if pss <= limit else 'NOT met',
                             mib(pss - heap) / w, mib(host)))
    L.append('```')
    L.append('')

    # Start and replacement.
    L.append('```')
    L.append('time from start until the first answer (s), by worker count; time from SIGKILL '
             'of the only worker until an answer (ms)')
    counts = sorted(int(w) for w in res['systems'][systems[0]]['starts'])
    L.append('%-16s ' % 'system' + ' '.join('%7s' % ('%dw' % w) for w in counts) +
             '   %10s  %s' % ('replace ms', 'Python load s (generate + dedupe and sort, dict)'))
    for s in systems:
        st = res['systems'][s]['starts']
        row = '%-16s ' % LABELS[s] + ' '.join(
            '%7.2f' % st[str(w)]['first_answer_s'] if str(w) in st else '%7s' % '-'
            for w in counts)
        rp = res['replace'].get(s, {})
        row += '   %10s' % ('%.1f' % rp['ms'] if rp.get('ms') is not None else '-')
        pl = st.get('1', {}).get('python_load')
        if pl:
            row += '  %.1f + %.1f, %.1f' % (pl['generate_s'], pl['sort_s'], pl['dict_s'])
        L.append(row)
    L.append('```')
    L.append('')
    L.append('Answers compared with mphost\'s, byte for byte: ' + '; '.join(
        '%s %d of %d identical' % (LABELS[s], c['requests'] - len(c['differ']), c['requests'])
        for s, c in res['compare'].items() if s != 'mphost') + '.')
    return '\n'.join(L) + '\n'


def plots(res, out_dir, plot_dir):
    """PNG plots with gnuplot: requests/s by route and workers; total PSS over the calls."""
    if not shutil.which('gnuplot'):
        return []
    cfg = res['config']
    systems = [s for s in SYSTEMS if s in res['systems']]
    made = []
    # Requests/s.
    dat = os.path.join(out_dir, 'rps.dat')
    with open(dat, 'w') as f:
        f.write('# route ' + ' '.join(systems) + '\n')
        for route, _ in RPS_ROUTES:
            for w in cfg['workers']:
                vals = [res['systems'][s]['rps'].get(str(w), {}).get(route, {}).get('rps', 0)
                        for s in systems]
                f.write('"%s, %dw" %s\n' % (route, w, ' '.join('%.0f' % v for v in vals)))
    png = os.path.join(plot_dir, 'perf-peers-rps.png')
    cols = ', '.join("'%s' using %d%s title '%s'" % (
        dat if i == 0 else '', i + 2, ':xtic(1)' if i == 0 else '', LABELS[s])
        for i, s in enumerate(systems))
    script = ("set terminal pngcairo size 900,480 font 'sans,10'\nset output '%s'\n"
              "set title 'requests/s, wrk -t%d -c%d, %d s (median of %d)'\n"
              "set style data histograms\nset style histogram clustered gap 1\n"
              "set style fill solid 0.8 border -1\nset key outside top center horizontal\n"
              "set ylabel 'requests/s'\n"
              "set yrange [0:*]\nset grid ytics\nplot %s\n" % (
                  png, cfg['threads'], cfg['connections'], cfg['duration'], cfg['reps'], cols))
    made += _gnuplot(script, out_dir, 'rps', png)
    # Memory over the calls.
    png = os.path.join(plot_dir, 'perf-peers-memory.png')
    n = len(cfg['memory_workers'])
    lines = ["set terminal pngcairo size %d,460 font 'sans,10'" % (380 * max(n, 2) + 40),
             "set output '%s'" % png,
             "set multiplot layout 1,%d title 'total PSS of all processes: %dk random /prefix "
             "calls, then %dk random /lookup calls'" % (n, cfg['calls'] // 1000,
                                                         cfg['calls'] // 1000),
             "set arrow 1 from %g, graph 0 to %g, graph 1 nohead dashtype 2" % (
                 cfg['calls'] / 1000, cfg['calls'] / 1000),
             "set xlabel 'calls (thousands)'", "set ylabel 'PSS (MiB)'", "set grid",
             "set key right center", "set yrange [0:*]",
             "set xrange [0:%g]" % (2.1 * cfg['calls'] / 1000)]
    for w in cfg['memory_workers']:
        parts = []
        for s in systems:
            m = res['systems'][s]['memory'].get(str(w))
            if not m:
                continue
            d = os.path.join(out_dir, 'mem-%s-%d.dat' % (s, w))
            with open(d, 'w') as f:
                for sm in m['samples']:
                    f.write('%.3f %.1f %.1f\n' % (sm['calls'] / 1000, mib(sm['pss']),
                                                  mib(sm['uss'])))
            parts.append("'%s' using 1:2 with linespoints title '%s'" % (d, LABELS[s]))
        lines.append("set title '%d workers'" % w)
        lines.append('plot ' + ', '.join(parts))
    lines.append('unset multiplot')
    made += _gnuplot('\n'.join(lines) + '\n', out_dir, 'memory', png)
    return made


def _gnuplot(script, out_dir, name, png):
    path = os.path.join(out_dir, 'plot-%s.gp' % name)
    with open(path, 'w') as f:
        f.write(script)
    r = subprocess.run(['gnuplot', path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not os.path.exists(png):
        raise Failure('gnuplot %s: %s' % (path, r.stderr.strip()))
    return [png]


@contextlib.contextmanager
def full_run_lock(enabled):
    """A full run must not share the CPU with a compiler: wait (up to 60 min) while a build
    lock exists, then hold our own lock for the run."""
    if not enabled:
        yield
        return
    deadline = time.monotonic() + 3600
    while os.path.exists(BUILD_LOCK) and time.monotonic() < deadline:
        log('waiting: %s exists' % BUILD_LOCK)
        time.sleep(30)
    if os.path.exists(BUILD_LOCK):
        raise Failure('%s still exists after 60 min' % BUILD_LOCK)
    with open(RUN_LOCK, 'w') as f:
        f.write('%d\n' % os.getpid())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(RUN_LOCK)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='tiny data set, short runs (<2 min)')
    ap.add_argument('--build-dir', default=os.path.join(REPO, 'build'))
    ap.add_argument('--out', help='directory for results (default: a new one under /tmp)')
    ap.add_argument('--plots', help='directory for the PNG plots (default: --out)')
    ap.add_argument('--words', default='/usr/share/dict/words')
    ap.add_argument('--synthetic-mb', type=int)
    ap.add_argument('--duration', type=int, help='seconds per wrk run')
    ap.add_argument('--reps', type=int, help='wrk runs per figure (the median is reported)')
    ap.add_argument('--calls', type=int, help='calls per memory phase')
    ap.add_argument('--workers', help='worker counts for requests/s, e.g. 2,8')
    ap.add_argument('--memory-workers', help='worker counts for memory, e.g. 2,8,64')
    ap.add_argument('--systems', default=','.join(SYSTEMS))
    ap.add_argument('--no-install', action='store_true', help='do not apt-get missing peers')
    ap.add_argument('--replot', metavar='RESULTS_JSON',
                    help='measure nothing: write results.md (to --out) and the plots (to '
                         '--plots) from the figures of an earlier run')
    ap.add_argument('--no-lock', action='store_true',
                    help=f'full run: do not wait for {BUILD_LOCK} nor hold {RUN_LOCK}')
    args = ap.parse_args()
    if args.replot:
        with open(args.replot) as f:
            res = json.load(f)
        out = os.path.abspath(args.out or tempfile.mkdtemp(prefix='mphost-peers-replot-'))
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, 'results.md'), 'w') as f:
            f.write(report(res))
        made = plots(res, out, os.path.abspath(args.plots or out))
        log('from %s: %s' % (args.replot, ', '.join([os.path.join(out, 'results.md')] + made)))
        sys.stdout.write(open(os.path.join(out, 'results.md')).read())
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    for key in ('synthetic_mb', 'duration', 'reps', 'calls'):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    for key in ('workers', 'memory_workers'):
        if getattr(args, key) is not None:
            cfg[key] = [int(w) for w in getattr(args, key).split(',') if w]
    args.synthetic_mb = cfg['synthetic_mb']
    args.systems = [s for s in args.systems.split(',') if s]
    if not set(args.systems) <= set(SYSTEMS) or 'mphost' not in args.systems:
        ap.error('--systems: a subset of %s that includes mphost' % ','.join(SYSTEMS))
    args.build_dir = os.path.abspath(args.build_dir)
    args.out = os.path.abspath(args.out or tempfile.mkdtemp(prefix='mphost-peers-'))
    os.makedirs(args.out, exist_ok=True)
    args.plots = os.path.abspath(args.plots or args.out)
    for f in (os.path.join(args.build_dir, 'bin', 'mphost'),
              os.path.join(args.build_dir, 'modules', 'libdict.so')):
        if not os.path.exists(f):
            print('run.py: %s is missing: build mphost first (tools/build)' % f, file=sys.stderr)
            return 2

    # SIGTERM / SIGHUP end the run through the same cleanup as an error.
    def on_signal(signum, frame):
        raise KeyboardInterrupt('signal %d' % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    run = None
    rc = 0
    t0 = time.monotonic()
    results_path = os.path.join(args.out, 'results.json')
    try:
        if not args.no_install:
            install_peers()
        for tool in ('gunicorn', 'uwsgi', 'wrk'):
            if not shutil.which(tool):
                raise Failure('%s is not installed (Debian: %s)' % (tool, ' '.join(PEER_PACKAGES)))
        with full_run_lock(not args.quick and not args.no_lock):
            run = Run(args, cfg)
            run.results['environment'] = environment(args)
            log('out: %s' % args.out)
            keys, key_info = make_keys(args.out, cfg['synthetic_mb'], args.words, args.quick)
            run.results['keys'] = key_info
            run.all(keys)
    except (Failure, KeyboardInterrupt, subprocess.SubprocessError, OSError) as e:
        log('FAILED: %s' % e)
        rc = 1
        if run:
            run.results['error'] = str(e)
    finally:
        if run:
            run.procs.stop_all()
            time.sleep(0.2)
            run.results['started_pids'] = sorted(run.procs.known.items())
            run.results['leftover_pids'] = run.procs.leftovers()
            run.results['seconds'] = time.monotonic() - t0
    if run is None:
        return rc or 1
    res = run.results
    stats = res['compare'].get('mphost') and run.reference and run.reference[COMPARE.index(
        ('GET', '/m/dict/stats'))]
    if stats and stats[0] == 200:
        body = json.loads(stats[3])
        res['words'], res['bytes'] = body['words'], body['bytes']
    if rc == 0:
        try:
            with open(os.path.join(args.out, 'results.md'), 'w') as f:
                f.write(report(res))
            res['plots'] = plots(res, args.out, args.plots)
        except (Failure, OSError, KeyError, ValueError, subprocess.SubprocessError) as e:
            log('FAILED in the report: %s' % e)
            res['error'] = 'report: %s' % e
            rc = 1
    with open(results_path, 'w') as f:
        json.dump(res, f, indent=1)
    if res['leftover_pids']:
        log('LEFT RUNNING: %s' % res['leftover_pids'])
        rc = 1
    log('%s in %.0f s: %s' % ('done' if rc == 0 else 'FAILED', res['seconds'], results_path))
    if rc == 0:
        sys.stdout.write(open(os.path.join(args.out, 'results.md')).read())
    return rc


if __name__ == '__main__':
    sys.exit(main())
