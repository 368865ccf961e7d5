"""
Serve a trained model over HTTP: an OpenAI-style completions API, streamed or not, and a web page to try it.

$ python serve.py --out_dir=out-shakespeare-char-cpu              # then open http://127.0.0.1:8000/
$ python serve.py --init_from=gpt2 --port=8080
$ curl -s 127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' -d '{"prompt": "ROMEO:", "max_tokens": 50}'

One thread runs the model for every request. It takes the running generations in turn, one token each, so a
long generation slows the others down but never holds them up, and the HTTP side (/health included) stays
responsive. Requests past max_running wait in arrival order. docs/serving.md describes the API and its limits.
"""
import asyncio
import collections
import json
import os
import secrets
import threading
import time

import torch

from common import UserError, exit_on_user_error, first_line
from configurator import check_ranges, configure
from device import keep_freed_memory, resolve_device, resolve_dtype, set_cpu_threads
from huggingface import GPT2_SIZES, is_pretrained
from model import GPT, check_sampling, prepare_for_sampling
from textstream import TextStream, parse_stops
from tokens import dataset_tokenizer, load_meta

# -----------------------------------------------------------------------------
init_from = 'resume' # 'resume' (out_dir/ckpt.pt), 'gpt2'..'gpt2-xl', or a local Hugging Face GPT-2 directory
out_dir = 'out' # the training run to serve, with init_from='resume'
host = '127.0.0.1' # the address to listen on; '0.0.0.0' serves other machines too (there is no authentication)
port = 8000
device = 'auto' # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'auto' # 'float32', 'bfloat16', 'float16'; 'auto': bf16 where native, else fp16 on GPUs, else fp32
cpu_threads = 0 # intra-op threads on the CPU; 0 = torch's default, one per core
unsafe_load = False # load a checkpoint that holds Python objects (it can run code: trusted files only)
overflow = 'auto' # past block_size: 'auto' (fast: 'roll' for rope, else 'slide'), 'recompute' (nanoGPT's, exact)
max_tokens_limit = 1024 # the most tokens one request may ask for
max_prompt_tokens = 4096 # the longest prompt, in tokens (the model sees at most its block_size of them)
max_running = 8 # generations that advance together, a token each in turn; later requests wait
max_waiting = 64 # requests that may wait for a turn; past that a request gets 503 at once
# -----------------------------------------------------------------------------

# the fields of a request; anything else is refused, so that a client never silently gets less than it asked for
# (OpenAI's logprobs, n, echo, suffix, penalties... are not implemented). model is accepted and ignored.
REQUEST_FIELDS = ('prompt', 'max_tokens', 'temperature', 'top_k', 'top_p', 'stop', 'seed', 'stream', 'model')
DEFAULT_MAX_TOKENS = 16 # OpenAI's default
MAX_STOPS = 4 # OpenAI's limit on stop strings
MAX_SEED = 2**63 - 1 # torch's generators take a 64-bit seed
DISCONNECT_POLL_S = 0.1 # how often a waiting non-streamed request checks that its client is still there


class Job:
    """One request's generation: the scheduler thread advances it, the request's coroutine reads its events."""

    def __init__(self, tokens, text, loop):
        self.tokens = tokens # the iterator of GPT.generate_tokens
        self.text = text # a TextStream
        self.loop = loop
        self.events = asyncio.Queue()
        self.cancelled = False # set from the event loop: the client has gone
        self.completion_tokens = 0

    def emit(self, *event):
        """Hand an event to the request's coroutine (called from the scheduler thread)."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Scheduler:
    """
    The one thread that runs the model. The running jobs advance a token each, in turn (round robin), so each
    client sees its tokens at a steady pace; jobs past max_running wait, first come first served.
    """

    def __init__(self, max_running, max_waiting):
        self.max_running, self.max_waiting = max_running, max_waiting
        self.waiting = collections.deque()
        self.running = []
        self.tokens_generated = 0 # over the server's life: /health shows it, and that a cancelled job stops
        self.wake = threading.Condition()
        threading.Thread(target=self._run, name='generate', daemon=True).start()

    def submit(self, job):
        with self.wake:
            if len(self.waiting) >= self.max_waiting:
                raise Busy(f"the server is busy: {len(self.running)} generations running and {len(self.waiting)} "
                           f"waiting; try again later")
            self.waiting.append(job)
            self.wake.notify()

    def counts(self):
        with self.wake:
            return len(self.running), len(self.waiting)

    def _run(self):
        while True:
            with self.wake:
                while not self.running and not self.waiting:
                    self.wake.wait()
                self.waiting = collections.deque(job for job in self.waiting if not job.cancelled)
                while self.waiting and len(self.running) < self.max_running:
                    self.running.append(self.waiting.popleft())
                turn = list(self.running)
            for job in turn:
                if job.cancelled:
                    self._retire(job)
                else:
                    self._step(job)

    def _retire(self, job):
        """Take job off the running list; before its last event, so that a client that has its answer sees it gone."""
        with self.wake:
            if job in self.running:
                self.running.remove(job)

    def _step(self, job):
        """One token for job, or its end."""
        try:
            token = next(job.tokens, None)
            if token is None:
                self._retire(job)
                job.emit('text', job.text.finish())
                job.emit('done', 'length')
                return
            job.completion_tokens += 1
            self.tokens_generated += 1
            piece = job.text.push(token.item())
            if piece:
                job.emit('text', piece)
            if job.text.stopped:
                self._retire(job)
                job.emit('done', 'stop')
        except Exception as e: # one failed generation (out of memory, say) must not take the server down
            self._retire(job)
            job.emit('error', f"generation failed: {type(e).__name__}: {first_line(e)}")


class Busy(Exception):
    """max_waiting requests already wait: the request is answered 503 at once instead of joining them."""


def check_request(body, encode):
    """The request's settings, checked and with defaults filled in; a UserError names the first bad one."""
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object, e.g. {\"prompt\": \"ROMEO:\", \"max_tokens\": 50}")
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise UserError(f"unknown field(s) {', '.join(map(repr, unknown))}: this server takes "
                        f"{', '.join(REQUEST_FIELDS)}")
    if 'prompt' not in body:
        raise UserError("prompt is missing: give the text to continue, e.g. \"prompt\": \"ROMEO:\"")
    # a field left out or null takes its default, as in OpenAI's API
    defaults = dict(prompt=None, max_tokens=DEFAULT_MAX_TOKENS, temperature=1.0, top_k=None, top_p=1.0, stop=None,
                    seed=None, stream=False)
    req = {key: default if body.get(key) is None else body[key] for key, default in defaults.items()}
    if not isinstance(req['prompt'], str):
        raise UserError("prompt must be a string (lists of prompts and token arrays are not supported)")
    if not req['prompt']:
        raise UserError("prompt is empty: give at least one character to continue from")
    def number(key, kinds, what):
        value = req[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise UserError(f"{key} must be {what}, not {json.dumps(value)}")
        return value
    max_tokens = number('max_tokens', int, 'an integer')
    if not 1 <= max_tokens <= max_tokens_limit:
        raise UserError(f"max_tokens={max_tokens} must be between 1 and {max_tokens_limit} (the server's limit)")
    temperature = number('temperature', (int, float), 'a number')
    if temperature < 0:
        raise UserError(f"temperature={temperature} must be >= 0 (0 is greedy)")
    if req['top_k'] is not None and number('top_k', int, 'an integer') <= 0:
        raise UserError(f"top_k={req['top_k']} must be > 0, or null for no limit")
    top_p = number('top_p', (int, float), 'a number')
    if not 0 < top_p <= 1:
        raise UserError(f"top_p={top_p} must be in (0, 1] (1 keeps every token)")
    if req['seed'] is not None and not 0 <= number('seed', int, 'an integer') <= MAX_SEED:
        raise UserError(f"seed={req['seed']} must be between 0 and {MAX_SEED}")
    stop = req['stop']
    if not (stop is None or isinstance(stop, str) or
            (isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
        raise UserError("stop must be a string or a list of strings")
    if isinstance(stop, list) and len(stop) > MAX_STOPS:
        raise UserError(f"stop has {len(stop)} strings; at most {MAX_STOPS} are allowed")
    if not isinstance(req['stream'], bool):
        raise UserError(f"stream must be true or false, not {json.dumps(req['stream'])}")
    if temperature == 0: # greedy, as OpenAI's temperature 0: the most likely token every time
        req.update(temperature=1.0, top_k=1)
    req['stop'] = parse_stops(stop)
    req['prompt_ids'] = encode(req['prompt']) # a UserError for characters outside a char-level vocabulary
    if len(req['prompt_ids']) > max_prompt_tokens:
        raise UserError(f"the prompt has {len(req['prompt_ids'])} tokens; the server takes at most "
                        f"{max_prompt_tokens}")
    check_sampling(req['temperature'], req['top_k'], overflow, req['top_p'])
    return req


def create_app(model, encode, decode, whole_lines, scheduler, model_name, page_path):
    """The FastAPI application: /v1/completions, /health and the page at /."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title='nanoGPT completions', docs_url=None, redoc_url=None, openapi_url=None)
    model_device = next(model.parameters()).device

    def error(status, message, kind='invalid_request_error'):
        return JSONResponse({'error': {'message': message, 'type': kind}}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc): # unknown paths and wrong methods: JSON like every other error
        message = {404: f"no such path {request.url.path}: try POST /v1/completions, GET /health or GET /",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, message)

    @app.get('/health')
    async def health():
        running, waiting = scheduler.counts()
        return {'status': 'ok', 'model': model_name, 'running': running, 'waiting': waiting,
                'tokens_generated': scheduler.tokens_generated}

    @app.get('/', response_class=HTMLResponse)
    async def page():
        with open(page_path, encoding='utf-8') as f:
            return HTMLResponse(f.read())

    def encode_prompt(prompt):
        try:
            return encode(prompt)
        except UserError as e: # the tokenizer speaks of sample.py's start; here the text is the prompt
            raise UserError(str(e).replace('remove them from start', 'remove them from the prompt'))

    @app.post('/v1/completions')
    async def completions(request: Request):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            return error(400, f"the request body is not valid JSON: {e}")
        try:
            req = check_request(body, encode_prompt)
        except UserError as e:
            return error(400, str(e))
        seed = secrets.randbits(63) if req['seed'] is None else req['seed']
        generator = torch.Generator(device=model_device).manual_seed(seed)
        idx = torch.tensor([req['prompt_ids']], dtype=torch.long, device=model_device)
        try:
            tokens = model.generate_tokens(idx, req['max_tokens'], temperature=req['temperature'],
                                           top_k=req['top_k'], top_p=req['top_p'], overflow=overflow,
                                           generator=generator)
        except UserError as e:
            return error(400, str(e))
        text = TextStream(decode, req['stop'], req['prompt_ids'], whole_lines)
        job = Job(tokens, text, asyncio.get_running_loop())
        try:
            scheduler.submit(job)
        except Busy as e:
            return error(503, str(e), 'server_busy')
        head = dict(id=f"cmpl-{secrets.token_hex(12)}", object='text_completion', created=int(time.time()),
                    model=model_name)
        def usage():
            n = len(req['prompt_ids'])
            done = job.completion_tokens
            return dict(prompt_tokens=n, completion_tokens=done, total_tokens=n + done)
        def choice(text, finish_reason=None):
            return dict(text=text, index=0, logprobs=None, finish_reason=finish_reason)
        if req['stream']:
            return StreamingResponse(stream(job, head, choice, usage), media_type='text/event-stream',
                                     headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})
        pieces = []
        checked = time.monotonic()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    event = None
                # checked by the clock, not only when no token came: a generating job always has one ready
                if time.monotonic() - checked >= DISCONNECT_POLL_S:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return error(499, "the client closed the connection")
                if event is None:
                    continue
                if event[0] == 'text':
                    pieces.append(event[1])
                elif event[0] == 'error':
                    return error(500, event[1], 'server_error')
                else:
                    return dict(head, choices=[choice(''.join(pieces), event[1])], usage=usage())
        finally:
            job.cancelled = True # nothing more to compute for a finished job, or for a client that has gone

    async def stream(job, head, choice, usage):
        """Server-sent events: a chunk of text per event, the finish_reason (and usage) last, then [DONE]."""
        def event(data):
            return f"data: {json.dumps(data)}\n\n"
        try:
            while True:
                kind, value = await job.events.get()
                if kind == 'text':
                    if value:
                        yield event(dict(head, choices=[choice(value)]))
                elif kind == 'error':
                    yield event({'error': {'message': value, 'type': 'server_error'}})
                    break
                else:
                    yield event(dict(head, choices=[choice('', value)], usage=usage()))
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled = True # the client read to the end, or went away: the scheduler drops the job

    return app


if __name__ == '__main__':
    exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
    configure(globals())
    if init_from != 'resume' and not is_pretrained(init_from):
        raise UserError(f"init_from={init_from!r} is not supported: use 'resume' (the ckpt.pt in out_dir), one of "
                        f"{', '.join(GPT2_SIZES)}, or a directory holding a Hugging Face GPT-2")
    check_sampling(1.0, None, overflow) # the server-wide setting, before the slow part
    check_ranges(globals(), positive=('max_tokens_limit', 'max_prompt_tokens', 'max_running', 'max_waiting'))
    if not 0 < port < 65536:
        raise UserError(f"port={port} must be between 1 and 65535")
    import uvicorn # imported late: the checks above answer without it

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if torch.device(device).type == 'cpu':
        keep_freed_memory()
    set_cpu_threads(cpu_threads)
    # the model and tokenizer exactly as sample.py loads them
    if init_from == 'resume':
        model, checkpoint = GPT.from_checkpoint(os.path.join(out_dir, 'ckpt.pt'), 'cpu', unsafe=unsafe_load,
                                                dropout=0.0)
        dataset = checkpoint.get('config', {}).get('dataset')
        del checkpoint
        model_name = os.path.basename(os.path.normpath(out_dir))
    else:
        model = GPT.from_pretrained(init_from, dict(dropout=0.0))
        dataset = None
        model_name = os.path.basename(os.path.normpath(init_from))
    n_params = model.get_num_params() # before prepare_for_sampling, whose packed weights are no parameters
    check_sampling(1.0, None, overflow, pos_emb=model.config.pos_emb)
    model = prepare_for_sampling(model, device, dtype)
    data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset) if dataset else None
    encode, decode = dataset_tokenizer(data_dir, model.config.vocab_size, init_from)
    # the arithmetic datasets' decoder turns each answer's digits around: their text is final a line at a time
    whole_lines = bool(data_dir and (load_meta(data_dir) or {}).get('reverse'))

    page_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'serve.html')
    app = create_app(model, encode, decode, whole_lines, Scheduler(max_running, max_waiting), model_name, page_path)
    print(f"serving {model_name} ({n_params:,} parameters, {device}, {dtype}) "
          f"on http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level='warning')
