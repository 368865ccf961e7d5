"""
Load a running serve.py: concurrent clients stream completions; prints requests/s, latency and time to first token.

$ python serve.py --out_dir=out-shakespeare-char-cpu &
$ python bench_serve.py --clients=8 --requests=100 --max_tokens=64

First one request alone (after one to warm up): its tokens/s is what a single stream gets. Then requests
requests, clients at a time, each streamed (so that the first token's arrival can be timed) with its own seed.
"""
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

from common import UserError, exit_on_user_error
from configurator import check_ranges, configure

# -----------------------------------------------------------------------------
host = '127.0.0.1' # where serve.py listens
port = 8000
clients = 8 # requests in flight at once
requests = 100 # requests in all (the lone and warm-up ones not counted)
max_tokens = 64 # tokens per request: no stop string, so every request generates exactly this many
prompt = 'ROMEO:'
temperature = 0.8
top_k = 200
timeout = 600.0 # seconds one request may take before the benchmark gives up
# -----------------------------------------------------------------------------
exit_on_user_error()
configure(globals())
check_ranges(globals(), positive=('clients', 'requests', 'max_tokens', 'port', 'top_k', 'timeout'))


def completion(seed):
    """One streamed request: (seconds to its first text, seconds to its end, tokens generated)."""
    body = dict(prompt=prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, seed=seed, stream=True)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        start = time.perf_counter()
        try:
            conn.request('POST', '/v1/completions', json.dumps(body), {'Content-Type': 'application/json'})
            response = conn.getresponse()
        except OSError as e:
            raise UserError(f"no server answers at http://{host}:{port}/ ({e}): start one with python serve.py "
                            f"--out_dir=... --port={port}")
        if response.status != 200:
            raise UserError(f"the server answered {response.status}: {response.read().decode(errors='replace')}")
        first, tokens = None, 0
        for line in response: # server-sent events: 'data: {...}' lines, then 'data: [DONE]'
            if not line.startswith(b'data: '):
                continue
            data = line[len(b'data: '):].strip()
            if data == b'[DONE]':
                break
            chunk = json.loads(data)
            if 'error' in chunk:
                raise UserError(f"the server failed a request: {chunk['error']['message']}")
            if chunk['choices'][0]['text'] and first is None:
                first = time.perf_counter() - start
            if 'usage' in chunk:
                tokens = chunk['usage']['completion_tokens']
        return first, time.perf_counter() - start, tokens
    finally:
        conn.close()


def percentile(values, q):
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


completion(0) # warm-up: the first request pays for one-time costs (allocations, the first prefill)
first, latency, tokens = completion(1)
print(f"one stream alone: {tokens} tokens in {latency:.3f} s: {tokens / latency:.1f} tokens/s, "
      f"first token after {first * 1000:.1f} ms")

start = time.perf_counter()
with ThreadPoolExecutor(clients) as pool:
    results = list(pool.map(completion, range(2, 2 + requests)))
wall = time.perf_counter() - start
firsts = [r[0] for r in results if r[0] is not None]
latencies = [r[1] for r in results]
total_tokens = sum(r[2] for r in results)
print(f"{requests} requests of {max_tokens} tokens, {clients} clients: {wall:.2f} s, {requests / wall:.2f} requests/s, "
      f"{total_tokens / wall:.1f} tokens/s in all")
print(f"latency: p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms")
print(f"time to first token: p50 {percentile(firsts, 50) * 1000:.0f} ms, p99 {percentile(firsts, 99) * 1000:.0f} ms")
