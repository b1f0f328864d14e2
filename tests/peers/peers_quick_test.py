#!/usr/bin/env python3
"""peers_quick: bench/peers/run.py --quick works end to end.

Runs the driver on the tiny data set and checks what it wrote: every system was started,
measured (requests/s on each route, memory samples, start and replacement times) and stopped,
the Python app answered exactly as mphost, the tables and plots exist, and no process it
started is left. The figures themselves are not checked. Exit 77 (skipped) if a peer is not
installed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'bench', 'peers', 'run.py')
SYSTEMS = ['mphost', 'mphost-spin0', 'gunicorn', 'uwsgi']
PEERS = ['gunicorn', 'uwsgi']
ROUTES = ['prefix', 'lookup', 'stats']


sys.path.insert(0, os.path.dirname(RUN))
from run import alive  # noqa: E402  (a pid is ours only if its start time still matches)


def check(results, out):
    failures = []

    def expect(ok, what):
        if not ok:
            failures.append(what)

    expect(results.get('profile') == 'quick', 'profile is quick')
    expect('error' not in results, 'no error: %s' % results.get('error'))
    cfg = results['config']
    w = str(cfg['workers'][0])
    for s in SYSTEMS:
        sysr = results['systems'].get(s)
        expect(sysr is not None, '%s was run' % s)
        if sysr is None:
            continue
        expect(sysr['starts'].get(w, {}).get('first_answer_s', 0) > 0,
               '%s: time to first answer with %s workers' % (s, w))
        for route in ROUTES:
            r = sysr['rps'].get(w, {}).get(route)
            expect(r is not None and r['rps'] > 0 and r['reps'][0]['requests'] > 0 and
                   r['p99_us'] >= r['p50_us'] > 0, '%s: requests/s and latency on %s' % (s, route))
        for stop in sysr.get('stops', {}).values():
            expect(stop['clean'], '%s stopped cleanly' % s)
        if s == 'mphost-spin0':
            continue
        expect(sysr['starts'].get('1', {}).get('first_answer_s', 0) > 0,
               '%s: time to first answer with 1 worker' % s)
        mem = sysr['memory'].get(w)
        expect(mem is not None and len(mem['samples']) == 1 + 2 * cfg['segments'] and
               all(m['pss'] > 0 and m['uss'] > 0 and m['processes'] >= 2
                   for m in mem['samples']),
               '%s: memory sampled at start and after every segment' % s)
        if mem:
            calls = mem['samples'][-1]['calls']
            expect(calls >= 2 * cfg['calls'], '%s: %d calls made for memory (%d asked)' %
                   (s, calls, 2 * cfg['calls']))
        rp = results['replace'].get(s, {})
        expect(rp.get('ms') is not None and rp['ms'] > 0 and
               rp['killed_pid'] not in rp['new_workers'],
               '%s: a killed worker was replaced and answered' % s)
    for s in PEERS:
        c = results['compare'].get(s, {})
        expect(c.get('against_mphost') and c.get('answered') == c.get('requests') and
               c.get('differ') == [], '%s answers exactly as mphost: %s' % (s, c.get('differ')))
    expect(results.get('words', 0) > 100000, '/stats read from mphost')
    # Nothing left: the driver's own check, and ours on every pid it recorded.
    expect(results.get('leftover_pids') == [], 'driver reports nothing left')
    started = results.get('started_pids', [])
    expect(len(started) >= 2 * len(SYSTEMS), 'driver recorded the processes it started')
    left = [pid for pid, start in started if alive(pid, start)]
    expect(not left, 'no process the driver started is still alive: %s' % left)
    md = os.path.join(out, 'results.md')
    expect(os.path.exists(md) and 'requests/s' in open(md).read(), 'results.md written')
    for png in ('perf-peers-rps.png', 'perf-peers-memory.png'):
        path = os.path.join(out, png)
        expect(os.path.exists(path) and open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n',
               '%s plotted' % png)
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build-dir', required=True)
    args = ap.parse_args()
    for tool in ('gunicorn', 'uwsgi', 'wrk', 'gnuplot'):
        if not shutil.which(tool):
            print('SKIP: %s is not installed (tools/setup installs the peers)' % tool)
            return 77
    out = tempfile.mkdtemp(prefix='mphost-peers-quick-')
    try:
        r = subprocess.run([sys.executable, RUN, '--quick', '--no-install', '--build-dir',
                            args.build_dir, '--out', out], timeout=200, capture_output=True,
                           text=True)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        path = os.path.join(out, 'results.json')
        if not os.path.exists(path):
            print('FAIL: run.py exited %d and wrote no results.json' % r.returncode)
            return 1
        with open(path) as f:
            results = json.load(f)
        failures = check(results, out)
        if r.returncode != 0:
            failures.insert(0, 'run.py exit status 0 (got %d)' % r.returncode)
        for f in failures:
            print('FAIL: expected %s' % f)
        print('%d checks failed' % len(failures) if failures else 'PASS')
        return 1 if failures else 0
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
