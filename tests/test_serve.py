"""serve.py as a client sees it: a real server on 127.0.0.1, real HTTP, the page in a real headless browser;
and the sampling it serves (top_p, stop strings) in model.py, textstream.py and sample.py."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import ROOT, TINY, one_line_error, run
from model import sample_next
from textstream import INCOMPLETE, TextStream

pytestmark = pytest.mark.usefixtures('char_data')

LONG = 100_000 # tokens that take the tiny model far longer than any test waits: a generation that only ends if stopped
SERVER_START_S = 120 # importing torch and loading the model, on a busy 2-core machine


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def out_dir(tmp_path_factory):
    """A tiny char-level Shakespeare model, trained two steps by train.py."""
    out = tmp_path_factory.mktemp('tiny')
    run('train.py', '--dataset=shakespeare_char', f'--out_dir={out}', '--eval_iters=1', *TINY, '--max_iters=2',
        '--eval_interval=2')
    return out


@pytest.fixture(scope='module')
def server(out_dir):
    """python serve.py on a free port, as a user starts it; yields (host, port)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'serve.py'), f'--out_dir={out_dir}', f'--port={port}',
                             '--device=cpu', '--dtype=float32', '--cpu_threads=1', f'--max_tokens_limit={LONG}',
                             '--max_prompt_tokens=100'],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            if request('GET', '/health', port=port)[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve.py did not come up:\n{proc.stdout.read()[-3000:]}", pytrace=False)
        time.sleep(0.2)
    yield '127.0.0.1', port
    proc.terminate()
    proc.wait(timeout=30)


def request(method, path, body=None, port=None, raw=None):
    """(status, decoded JSON) of one request; body is sent as JSON, raw as it is."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        conn.request(method, path, data, {'Content-Type': 'application/json'})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def complete(server, **body):
    status, answer = request('POST', '/v1/completions', body, port=server[1])
    assert status == 200, answer
    return answer


def text(server, **body):
    return complete(server, **body)['choices'][0]['text']


def health(server):
    return request('GET', '/health', port=server[1])[1]


def open_stream(server, **body):
    """A streamed completion: (connection, response) with the status checked; read events with events()."""
    conn = http.client.HTTPConnection(*server, timeout=60)
    conn.request('POST', '/v1/completions', json.dumps(dict(body, stream=True)), {'Content-Type': 'application/json'})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader('Content-Type').startswith('text/event-stream')
    return conn, response


def events(response):
    """The data of each server-sent event, as sent ('[DONE]' as the string)."""
    for line in response:
        line = line.decode().strip()
        if line:
            assert line.startswith('data: '), line
            yield line[len('data: '):]


def wait_for(condition, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -----------------------------------------------------------------------------
# the API

def test_a_completion_answers_as_openais_completions_api(server):
    answer = complete(server, prompt='ROMEO:', max_tokens=20, seed=7)
    assert answer['object'] == 'text_completion' and answer['id'].startswith('cmpl-')
    assert answer['model'] == health(server)['model'] and abs(answer['created'] - time.time()) < 60
    choice, = answer['choices']
    # a char-level model: one character per token; max_tokens reached is finish_reason 'length'
    assert len(choice['text']) == 20 and choice['finish_reason'] == 'length' and choice['index'] == 0
    assert answer['usage'] == dict(prompt_tokens=len('ROMEO:'), completion_tokens=20, total_tokens=26)
    # a seed makes the draw repeatable; without one each request draws afresh
    assert text(server, prompt='ROMEO:', max_tokens=20, seed=7) == choice['text']
    unseeded = {text(server, prompt='ROMEO:', max_tokens=20) for _ in range(3)}
    assert len(unseeded) == 3


def test_stream_sends_the_text_token_by_token_then_finish_reason_and_done(server):
    whole = complete(server, prompt='JULIET:', max_tokens=30, seed=3, temperature=0.9)
    conn, response = open_stream(server, prompt='JULIET:', max_tokens=30, seed=3, temperature=0.9)
    data = list(events(response))
    conn.close()
    assert data[-1] == '[DONE]'
    chunks = [json.loads(d) for d in data[:-1]]
    texts = [c['choices'][0]['text'] for c in chunks]
    # each chunk a token's character as it was drawn, the last one empty with the finish_reason and the usage
    assert len(chunks) == 31 and all(len(t) == 1 for t in texts[:-1]) and texts[-1] == ''
    assert [c['choices'][0]['finish_reason'] for c in chunks] == [None] * 30 + ['length']
    assert chunks[-1]['usage'] == whole['usage'] and ''.join(texts) == whole['choices'][0]['text']
    assert len({c['id'] for c in chunks}) == 1


def test_stop_strings_end_the_text_before_them(server):
    full = text(server, prompt='ROMEO:', max_tokens=60, seed=11)
    stop = full[20:23] # three characters the same seed draws again
    cut = full.index(stop)
    for stops in (stop, ['never appears', stop]):
        answer = complete(server, prompt='ROMEO:', max_tokens=60, seed=11, stop=stops)
        assert answer['choices'][0]['text'] == full[:cut] and answer['choices'][0]['finish_reason'] == 'stop'
        # generation ended at the token that completed the stop string
        assert answer['usage']['completion_tokens'] == cut + len(stop)
    conn, response = open_stream(server, prompt='ROMEO:', max_tokens=60, seed=11, stop=[stop])
    chunks = [json.loads(d) for d in events(response) if d != '[DONE]']
    conn.close()
    assert ''.join(c['choices'][0]['text'] for c in chunks) == full[:cut]
    assert chunks[-1]['choices'][0]['finish_reason'] == 'stop'


def test_temperature_zero_and_a_tiny_top_p_are_greedy(server):
    greedy = text(server, prompt='ROMEO:', max_tokens=20, top_k=1, seed=1)
    for seed in (2, 3):
        assert text(server, prompt='ROMEO:', max_tokens=20, temperature=0, seed=seed) == greedy
        assert text(server, prompt='ROMEO:', max_tokens=20, top_p=1e-6, seed=seed) == greedy


BAD_REQUESTS = [ # (raw body, what the error message says)
    ('{"prompt": "ROMEO:"', 'not valid JSON'),
    ('[1, 2]', 'must be a JSON object'),
    ('{"max_tokens": 5}', 'prompt is missing'),
    ('{"prompt": ""}', 'prompt is empty'),
    ('{"prompt": ["a", "b"]}', 'prompt must be a string'),
    ('{"prompt": "ROMEO:", "max_tokens": -1}', 'max_tokens=-1 must be between 1 and'),
    ('{"prompt": "ROMEO:", "max_tokens": 1000000000}', "the server's limit"),
    ('{"prompt": "ROMEO:", "max_tokens": "5"}', 'max_tokens must be an integer'),
    ('{"prompt": "ROMEO:", "temperature": -0.5}', 'temperature=-0.5 must be >= 0'),
    ('{"prompt": "ROMEO:", "top_p": 0}', 'top_p=0 must be in (0, 1]'),
    ('{"prompt": "ROMEO:", "top_p": 1.5}', 'top_p=1.5 must be in (0, 1]'),
    ('{"prompt": "ROMEO:", "top_k": 0}', 'top_k=0 must be > 0'),
    ('{"prompt": "ROMEO:", "seed": -3}', 'seed=-3 must be between 0'),
    ('{"prompt": "ROMEO:", "stop": 5}', 'stop must be a string or a list of strings'),
    ('{"prompt": "ROMEO:", "stop": ["a", "b", "c", "d", "e"]}', 'at most 4'),
    ('{"prompt": "ROMEO:", "stream": "yes"}', 'stream must be true or false'),
    ('{"prompt": "' + 'a' * 101 + '"}', 'the prompt has 101 tokens; the server takes at most 100'),
    ('{"prompt": "ROMEO: \\u20ac"}', "characters not in the model's vocabulary: '\u20ac'; remove them from the prompt"),
    ('{"prompt": "ROMEO:", "logprobs": 2, "n": 3}', "unknown field(s) 'logprobs', 'n'"),
]

@pytest.mark.parametrize('raw,message', BAD_REQUESTS, ids=[m for _, m in BAD_REQUESTS])
def test_a_bad_request_gets_a_400_with_a_message_and_the_server_keeps_serving(server, raw, message):
    status, answer = request('POST', '/v1/completions', raw=raw, port=server[1])
    assert status == 400 and message in answer['error']['message'], answer
    assert health(server)['status'] == 'ok'


def test_wrong_paths_and_methods_get_json_errors(server):
    status, answer = request('GET', '/v1/completions', port=server[1])
    assert status == 405 and 'GET is not allowed' in answer['error']['message']
    status, answer = request('POST', '/v1/chat/completions', {'prompt': 'a'}, port=server[1])
    assert status == 404 and 'no such path' in answer['error']['message']


def test_health_answers_while_a_long_generation_runs_and_a_short_one_is_not_held_up(server):
    conn, response = open_stream(server, prompt='ROMEO:', max_tokens=LONG)
    try:
        next(events(response)) # the long generation has begun
        start = time.perf_counter()
        state = health(server)
        assert time.perf_counter() - start < 1.0 and state['running'] == 1
        # a second request shares the model thread, a token each in turn: it finishes while the first goes on
        assert complete(server, prompt='JULIET:', max_tokens=10)['usage']['completion_tokens'] == 10
        assert health(server)['running'] == 1
    finally:
        conn.close()


def test_a_client_that_disconnects_stops_its_generation(server):
    for stream in (True, False):
        wait_for(lambda: health(server)['running'] == 0, 'earlier generations to end')
        before = health(server)['tokens_generated']
        if stream:
            conn, response = open_stream(server, prompt='ROMEO:', max_tokens=LONG)
            for _, _ in zip(range(3), events(response)):
                pass
        else:
            conn = http.client.HTTPConnection(*server, timeout=60)
            conn.request('POST', '/v1/completions', json.dumps(dict(prompt='ROMEO:', max_tokens=LONG)))
            wait_for(lambda: health(server)['running'] == 1, 'the generation to start')
        conn.sock.shutdown(socket.SHUT_RDWR) # the client goes away mid-generation
        conn.close()
        wait_for(lambda: health(server)['running'] == 0, 'the generation to stop')
        stopped_at = health(server)['tokens_generated']
        time.sleep(0.3)
        assert health(server)['tokens_generated'] == stopped_at < before + LONG


def test_requests_from_many_clients_all_complete(server):
    answers = [None] * 6
    def client(i):
        answers[i] = complete(server, prompt='ROMEO:', max_tokens=15, seed=i)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(answers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a['usage']['completion_tokens'] == 15 for a in answers)
    # each kept to its own seed although their tokens were drawn interleaved
    assert answers[4]['choices'][0]['text'] == text(server, prompt='ROMEO:', max_tokens=15, seed=4)


def test_bench_serve_reports_throughput_and_latency(server):
    p = run('bench_serve.py', f'--port={server[1]}', '--clients=2', '--requests=4', '--max_tokens=8')
    assert 'one stream alone: 8 tokens in' in p.stdout
    assert '4 requests of 8 tokens, 2 clients:' in p.stdout and 'requests/s' in p.stdout
    assert 'latency: p50' in p.stdout and 'time to first token: p50' in p.stdout


# -----------------------------------------------------------------------------
# the page, in a real browser

def browser_paths():
    chromium = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))), None)
    driver = shutil.which('chromedriver')
    if not chromium or not driver:
        pytest.skip("no chromium and chromedriver: apt-get install chromium chromium-driver (CI installs them)")
    return chromium, driver


def test_the_page_streams_a_completion_into_view(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    chromium, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(f'http://127.0.0.1:{server[1]}/')
        prompt = browser.find_element(By.ID, 'prompt')
        prompt.clear()
        prompt.send_keys('JULIET:')
        for name, value in (('max_tokens', '400'), ('seed', '5'), ('top_k', ''), ('temperature', '1')):
            field = browser.find_element(By.ID, name)
            field.clear()
            if value:
                field.send_keys(value)
        # record the completion's length each time the page changes it
        browser.execute_script("""
            window.lengths = [];
            new MutationObserver(() => {
                const c = document.getElementById('completion');
                if (c) window.lengths.push(c.textContent.length);
            }).observe(document.getElementById('output'), {childList: true, subtree: true, characterData: true});""")
        browser.find_element(By.ID, 'generate').click()
        wait_for(lambda: browser.find_element(By.ID, 'status').text.startswith('finished'), 'the page to finish', 60)
        shown = browser.execute_script("return document.getElementById('completion').textContent")
        lengths = browser.execute_script('return window.lengths')
    finally:
        browser.quit()
    expected = text(server, prompt='JULIET:', max_tokens=400, seed=5, temperature=1)
    assert shown == expected
    # streamed: the text grew in many steps rather than appearing at once
    grown = [n for n in lengths if n > 0]
    assert len(set(grown)) > 20 and grown == sorted(grown) and grown[-1] == len(expected)


# -----------------------------------------------------------------------------
# top_p and stop strings outside the server

def test_top_p_samples_only_from_the_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, 1, 4) # 4000 draws at once
    def drawn(top_p):
        torch.manual_seed(0)
        return set(sample_next(logits, 1.0, None, top_p).flatten().tolist())
    # the fewest most likely tokens whose probability reaches top_p
    assert drawn(0.5) == {0} and drawn(0.79) == {0, 1} and drawn(0.81) == {0, 1, 2} and drawn(1.0) == {0, 1, 2, 3}
    # top_p=1 leaves the draw exactly as it was without top_p, token for token
    torch.manual_seed(1)
    plain = sample_next(logits, 0.8, 3)
    torch.manual_seed(1)
    assert torch.equal(sample_next(logits, 0.8, 3, 1.0), plain)


def test_text_stream_holds_back_split_characters_and_possible_stop_strings(gpt2_bpe_dir, monkeypatch):
    monkeypatch.setenv('GPT2_BPE_DIR', gpt2_bpe_dir)
    from tokens import gpt2_encoding
    enc = gpt2_encoding()
    text = 'Mañana 😀 naïve 東京 café'
    ids = enc.encode(text)
    assert len(ids) > len(text.split()) + 4 # some characters are split over several tokens
    stream = TextStream(enc.decode)
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert ''.join(pieces) == text and not any(INCOMPLETE in p for p in pieces)
    # a stop string over several characters: what could begin it waits; the text ends before it
    stream = TextStream(lambda ids: ''.join(map(chr, ids)), ['END'])
    # 'E', 'EN' wait; at 'ENE' the first 'EN' cannot begin 'END' any more, but the last 'E' still can
    pieces = [stream.push(ord(c)) for c in 'an ENEMY END!']
    assert pieces == ['a', 'n', ' ', '', '', 'EN', 'EM', 'Y', ' ', '', '', '', '']
    assert stream.stopped and stream.text == 'an ENEMY ' and stream.finish() == ''


def test_text_stream_settles_reversed_answers_a_line_at_a_time():
    """The arithmetic datasets store answers digits reversed; their decoder turns each line's answer around."""
    from tokens import reverse_answers
    decode = lambda ids: reverse_answers(''.join(map(chr, ids)), '+')
    prompt = [ord(c) for c in '1+1=2\n57+68='] # the problem is in the prompt, the answer '125' comes as '5', '2', '1'
    stream = TextStream(decode, prompt=prompt, whole_lines=True)
    assert [stream.push(ord(c)) for c in '521\n3+'] == ['', '', '', '125\n', '', '']
    assert stream.finish() == '3+'
    stream = TextStream(decode, ['\n'], prompt, whole_lines=True)
    assert [stream.push(ord(c)) for c in '521\n'] == ['', '', '', '125'] and stream.stopped


def test_sample_py_takes_top_p_and_stop(server, out_dir):
    def sample(*args):
        p = run('sample.py', f'--out_dir={out_dir}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=60',
                '--device=cpu', '--dtype=float32', *args)
        return p.stdout.split('ROMEO:', 1)[1].split('\n---------------')[0] # the completion, after the prompt
    greedy = text(server, prompt='ROMEO:', max_tokens=60, temperature=0)
    # a tiny top_p keeps only the most likely token: greedy, whatever the seed
    assert sample('--top_p=1e-9', '--seed=9') == greedy
    # --stop: the sample ends just before the first occurrence of the stop string
    stop = greedy[-2:]
    assert sample('--top_p=1e-9', '--seed=9', f'--stop={stop!r}') == greedy[:greedy.index(stop)]


def test_bad_settings_of_serve_and_sample_are_one_line_errors(out_dir):
    line = one_line_error(run('serve.py', f'--out_dir={out_dir}', '--max_running=0', check=False))
    assert 'max_running=0 must be > 0' in line
    line = one_line_error(run('sample.py', f'--out_dir={out_dir}', '--top_p=0', check=False))
    assert 'top_p=0.0 must be in (0, 1]' in line # an int given for a float setting becomes a float
