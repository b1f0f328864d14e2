#!/usr/bin/env python3
"""bench/http/run.py: mphost's per-request cost against its ceiling and its peers (issue 15).

In one interleaved run, for each route and worker count, every system in turn:

  * ceiling      build/bin/kj_ceiling: one KJ HttpServer answering, in-process, the bytes mphost
                 gave for that route (no worker, no ring, no hop): the most one event loop with
                 this HTTP library can do;
  * mphost       the dict module, `workers` = `maxWorkers` = N, defaults otherwise;
  * mphost-p0    the same with "pipelineDepth": 0 (calls wait only in the host's queue);
  * uwsgi        uWSGI --http-socket (its workers parse HTTP; it closes after each answer);
  * uwsgi-router uWSGI --http with --http-keepalive (a front process, as mphost's);
  * gunicorn     gunicorn -k gevent --preload.

Each is measured with wrk (--latency, fixed threads, connections and duration) on /stats,
/prefix?q=ab and random /lookup keys. For each run it prints requests/s, p50, p99, the server's
CPU per request (utime + stime of every process of the server, over the run, divided by the
answers), and for mphost the wake-ups per call (mphost_wakeups_total over the run). The Python
peers serve bench/peers/dict_app.py over the same word list.

  bench/http/run.py [--build-dir build] [--out DIR] [--workers 2,8] [--reps 2] [--duration 8]
  bench/http/run.py --quick        # harness check (~1 min)

Writes results.json, results.md and, with gnuplot, cpu.png and rps.png. Every process started is
stopped by pid; every loop is bounded.
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PEERS = os.path.join(REPO, 'bench', 'peers')
sys.path.insert(0, PEERS)
import run as peers  # noqa: E402  (processes, wrk, the Python peers)

ROUTES = [('stats', '/m/dict/stats'), ('prefix', '/m/dict/prefix?q=ab'),
          ('lookup', '/m/dict/lookup?w=')]
SYSTEMS = ['ceiling', 'mphost', 'mphost-p0', 'uwsgi', 'uwsgi-router', 'gunicorn']
LABELS = {'ceiling': 'in-process KJ (ceiling)', 'mphost': 'mphost',
          'mphost-p0': 'mphost pipelineDepth 0', 'uwsgi': 'uWSGI --http-socket',
          'uwsgi-router': 'uWSGI --http router, keep-alive', 'gunicorn': 'gunicorn+gevent'}


def log(*a):
    print(*a, flush=True)


def cpu_seconds(pids):
    tick = os.sysconf('SC_CLK_TCK')
    total = 0
    for pid in pids:
        try:
            with open('/proc/%d/stat' % pid) as f:
                s = f.read()
            fields = s[s.rindex(')') + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


def cpu_of_tree(root):
    """CPU seconds of `root` and every descendant alive now, and of those that ended and were
    reaped by a process of the tree (cutime/cstime of the tree's members)."""
    tick = os.sysconf('SC_CLK_TCK')
    total = 0
    for pid in peers.tree(root):
        try:
            with open('/proc/%d/stat' % pid) as f:
                s = f.read()
            fields = s[s.rindex(')') + 2:].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


def metric(port, name, labels):
    r = peers.get(port, '/metrics')
    if not r or r[0] != 200:
        return 0.0
    pat = re.compile(r'^%s\{%s\} ([0-9.e+]+)$' % (re.escape(name), re.escape(labels)), re.M)
    m = pat.search(r[2].decode())
    return float(m.group(1)) if m else 0.0


class Ceiling(peers.System):
    graceful_stop = True

    def __init__(self, *a, answers):
        super().__init__(*a)
        self.answers = answers  # path -> file

    def argv(self):
        return ([os.path.join(self.args.build_dir, 'bin', 'kj_ceiling'), '--listen',
                 '127.0.0.1:%d' % self.port] +
                ['%s=%s' % (p, f) for p, f in sorted(self.answers.items())])

    def ready(self):
        return True


class Mphost(peers.Mphost):
    pass


class MphostP0(peers.Mphost):
    extra = {'pipelineDepth': 0}


class UwsgiRouter(peers.System):
    def argv(self):
        # Plugins first: uWSGI parses the options a plugin adds only once it is loaded.
        return ['uwsgi', '--plugins', 'corerouter,http,python3', '--http',
                '127.0.0.1:%d' % self.port, '--http-keepalive', '--master', '--processes',
                str(self.workers), '--wsgi-file', os.path.join(PEERS, 'dict_app.py'),
                '--need-app', '--die-on-term', '--disable-logging']

    def worker_pids(self):
        # The master's children: the workers and the HTTP router.
        return peers.children(self.popen.pid)

    def ready(self):
        return len(self.worker_pids()) >= self.workers + 1


CLASSES = {'mphost': Mphost, 'mphost-p0': MphostP0, 'uwsgi': peers.Uwsgi,
           'uwsgi-router': UwsgiRouter, 'gunicorn': peers.Gunicorn}


class Bench:
    def __init__(self, args, cfg):
        self.args, self.cfg = args, cfg
        self.procs = peers.Processes()
        self.wrk = peers.Wrk(cfg, args.out)
        self.rows = []

    def lookup_keys(self):
        rng = random.Random(15)
        words = [w.strip() for w in open(self.args.words, encoding='utf-8', errors='replace')]
        words = [w for w in words if w]
        hits = rng.sample(words, min(len(words), 20000))
        misses = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(13))
                  for _ in range(len(hits) // 3)]
        keys = [urllib.parse.quote(w, safe='') for w in hits + misses]
        rng.shuffle(keys)
        path = os.path.join(self.args.out, 'keys-lookup.txt')
        with open(path, 'w') as f:
            f.write('\n'.join(keys) + '\n')
        return path

    def start(self, sysm):
        sysm.start()
        deadline = time.monotonic() + self.cfg['start_timeout']
        while time.monotonic() < deadline:
            if sysm.popen.poll() is not None:
                raise peers.Failure('%s exited during start; see %s' % (sysm.name, sysm.log))
            r = peers.get(sysm.port, '/m/dict/stats', timeout=5)
            if r and r[0] in (200, 404) and sysm.ready():
                break
            time.sleep(0.05)
        else:
            raise peers.Failure('%s did not start; see %s' % (sysm.name, sysm.log))
        time.sleep(1.0)

    def ceiling_answers(self, mphost_port, keys):
        """The bytes mphost gives for each route; for /lookup, for one key (the ceiling
        answers every lookup with them)."""
        answers = {}
        first_key = open(keys).readline().strip()
        for route, path in ROUTES:
            target = path + first_key if route == 'lookup' else path
            r = peers.get(mphost_port, target)
            if not r:
                raise peers.Failure('mphost gave no answer for %s' % target)
            f = os.path.join(self.args.out, 'answer-%s.bin' % route)
            with open(f, 'wb') as out:
                out.write(r[2])
            answers[path + '*' if route == 'lookup' else path] = f
        return answers

    def measure(self, sysm, route, path, keys, rep):
        root = sysm.popen.pid
        wake0 = wake_h0 = calls0 = 0.0
        is_mphost = isinstance(sysm, peers.Mphost)
        if is_mphost:
            wake0 = metric(sysm.port, 'mphost_wakeups_total', 'module="dict",direction="to_worker"')
            wake_h0 = metric(sysm.port, 'mphost_wakeups_total', 'module="dict",direction="to_host"')
            calls0 = self.calls(sysm.port)
        cpu0 = cpu_of_tree(root)
        if route == 'lookup':
            r = self.wrk.run(sysm.port, path, keys=keys, seed=100 + rep)
        else:
            r = self.wrk.run(sysm.port, path)
        cpu1 = cpu_of_tree(root)
        row = {'system': sysm.name, 'workers': sysm.workers, 'route': route, 'rep': rep,
               'rps': r['rps'], 'p50_us': r['p50_us'], 'p99_us': r['p99_us'],
               'requests': r['requests'], 'errors': r['errors'],
               'cpu_us_per_request': 1e6 * (cpu1 - cpu0) / max(1, r['requests'])}
        if is_mphost:
            calls = max(1.0, self.calls(sysm.port) - calls0)
            row['wakeups_to_worker_per_call'] = (metric(
                sysm.port, 'mphost_wakeups_total', 'module="dict",direction="to_worker"') - wake0) / calls
            row['wakeups_to_host_per_call'] = (metric(
                sysm.port, 'mphost_wakeups_total', 'module="dict",direction="to_host"') - wake_h0) / calls
        log('  %-13s w=%d %-6s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  %6.1f us/req%s' % (
            sysm.name, sysm.workers, route, row['rps'], row['p50_us'] / 1000,
            row['p99_us'] / 1000, row['cpu_us_per_request'],
            '  wakes/call %.2f+%.2f' % (row['wakeups_to_worker_per_call'],
                                         row['wakeups_to_host_per_call']) if is_mphost else ''))
        self.rows.append(row)

    @staticmethod
    def calls(port):
        r = peers.get(port, '/metrics')
        if not r:
            return 0.0
        return sum(float(m) for m in re.findall(
            r'^mphost_calls_total\{module="dict",status="\d+"\} ([0-9.e+]+)$', r[2].decode(), re.M))

    def run(self):
        keys = self.lookup_keys()
        systems = self.args.systems
        for workers in self.cfg['workers']:
            started = {}
            try:
                for name in systems:
                    if name == 'ceiling':
                        continue
                    sysm = CLASSES[name](name, self.args, self.procs, self.args.out, workers)
                    log('start %s with %d workers' % (name, workers))
                    self.start(sysm)
                    started[name] = sysm
                if 'ceiling' in systems:
                    ref = started.get('mphost') or started.get('mphost-p0')
                    if ref is None:
                        raise peers.Failure('the ceiling needs mphost in the run for its bytes')
                    sysm = Ceiling('ceiling', self.args, self.procs, self.args.out, workers,
                                   answers=self.ceiling_answers(ref.port, keys))
                    self.start(sysm)
                    started['ceiling'] = sysm
                # Interleaved: every system once per repetition, route by route.
                for route, path in ROUTES:
                    for rep in range(self.cfg['reps']):
                        for name in systems:
                            self.measure(started[name], route, path, keys, rep)
            finally:
                for sysm in started.values():
                    sysm.stop()

    def summary(self):
        out = {}
        for row in self.rows:
            key = (row['system'], row['workers'], row['route'])
            out.setdefault(key, []).append(row)
        table = []
        for (system, workers, route), rows in out.items():
            entry = {'system': system, 'workers': workers, 'route': route}
            for k in ('rps', 'p50_us', 'p99_us', 'cpu_us_per_request',
                      'wakeups_to_worker_per_call', 'wakeups_to_host_per_call'):
                vals = [r[k] for r in rows if k in r]
                if vals:
                    entry[k] = statistics.median(vals)
            entry['read_errors'] = sum(r['errors']['read'] for r in rows)
            table.append(entry)
        return table


def report(table, env, cfg):
    lines = ['# bench/http: per-request cost against the ceiling', '',
             'Commit %s; %s CPUs (%s); wrk -t%d -c%d -d%ds, median of %d interleaved runs. '
             'CPU: utime+stime of every process of the server over the run, per answer.' % (
                 (env.get('commit') or '?')[:12], env.get('cpus'), env.get('cpu'),
                 cfg['threads'], cfg['connections'], cfg['duration'], cfg['reps']), '']
    for workers in cfg['workers']:
        lines += ['## %d workers' % workers, '',
                  '| route | system | req/s | p50 ms | p99 ms | CPU µs/req | × ceiling CPU | '
                  'wakes/call (to worker + to host) |',
                  '|---|---|---|---|---|---|---|---|']
        for route, _ in ROUTES:
            ceil = next((e for e in table if e['system'] == 'ceiling' and
                         e['workers'] == workers and e['route'] == route), None)
            for system in SYSTEMS:
                e = next((x for x in table if x['system'] == system and
                          x['workers'] == workers and x['route'] == route), None)
                if e is None:
                    continue
                ratio = e['cpu_us_per_request'] / ceil['cpu_us_per_request'] if ceil else 0
                wakes = ('%.2f + %.2f' % (e['wakeups_to_worker_per_call'],
                                          e['wakeups_to_host_per_call'])
                         if 'wakeups_to_worker_per_call' in e else '')
                lines.append('| %s | %s | %.0f | %.2f | %.2f | %.1f | %.2f | %s |' % (
                    route, LABELS[system], e['rps'], e['p50_us'] / 1000, e['p99_us'] / 1000,
                    e['cpu_us_per_request'], ratio, wakes))
        lines.append('')
    return '\n'.join(lines) + '\n'


def plot(table, cfg, out_dir):
    if not peers.shutil.which('gnuplot'):
        return
    for what, ylabel, name in (('cpu_us_per_request', 'server CPU µs per request', 'cpu'),
                               ('rps', 'requests/s', 'rps')):
        data = os.path.join(out_dir, '%s.dat' % name)
        systems = [s for s in SYSTEMS if s != 'ceiling' and any(e['system'] == s for e in table)]
        with open(data, 'w') as f:
            for workers in cfg['workers']:
                for route, _ in ROUTES:
                    vals = []
                    for s in ['ceiling'] + systems:
                        e = next((x for x in table if x['system'] == s and
                                  x['workers'] == workers and x['route'] == route), None)
                        vals.append('%.2f' % e[what] if e else '0')
                    f.write('"%s w=%d" %s\n' % (route, workers, ' '.join(vals)))
        cols = ', '.join("'%s' using %d:xtic(1) title '%s'" % (data, i + 3, LABELS[s])
                         for i, s in enumerate(systems))
        script = '\n'.join([
            'set terminal pngcairo size 1100,520',
            "set output '%s'" % os.path.join(out_dir, '%s.png' % name),
            'set style data histograms', 'set style histogram clustered gap 1',
            'set style fill solid 0.8 border -1', "set ylabel '%s'" % ylabel,
            'set key outside right', 'set grid ytics', 'set yrange [0:*]',
            # The ceiling: a line through its value for each group.
            "plot %s, '%s' using 0:2 with linespoints lw 2 pt 7 lc rgb 'black' "
            "title 'in-process KJ (ceiling)'" % (cols, data)])
        subprocess.run(['gnuplot'], input=script, text=True, timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--build-dir', default=os.path.join(REPO, 'build'))
    ap.add_argument('--out')
    ap.add_argument('--words', default='/usr/share/dict/words')
    ap.add_argument('--workers', default='2,8')
    ap.add_argument('--reps', type=int, default=2)
    ap.add_argument('--duration', type=int, default=8)
    ap.add_argument('--connections', type=int, default=64)
    ap.add_argument('--systems', default=','.join(SYSTEMS))
    ap.add_argument('--no-install', action='store_true')
    args = ap.parse_args()
    args.systems = args.systems.split(',')
    args.synthetic_mb = 0  # words only
    cfg = dict(workers=[int(w) for w in args.workers.split(',')], reps=args.reps,
               duration=args.duration, threads=2, connections=args.connections,
               start_timeout=120)
    if args.quick:
        cfg.update(workers=[2], reps=1, duration=1, connections=16)
    args.out = args.out or tempfile.mkdtemp(prefix='mphost-http-bench-')
    os.makedirs(args.out, exist_ok=True)
    if not args.no_install:
        peers.install_peers()
    env = peers.environment(args)
    bench = Bench(args, cfg)
    try:
        bench.run()
    finally:
        bench.procs.stop_all()
        left = bench.procs.leftovers()
        if left:
            log('processes left behind: %s' % left)
    table = bench.summary()
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump({'environment': env, 'config': cfg, 'runs': bench.rows, 'table': table}, f,
                  indent=1)
    md = report(table, env, cfg)
    with open(os.path.join(args.out, 'results.md'), 'w') as f:
        f.write(md)
    plot(table, cfg, args.out)
    print(md)
    log('results in %s' % args.out)


if __name__ == '__main__':
    main()
