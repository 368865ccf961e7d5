"""Generated tokens to text as they arrive: only text that later tokens cannot change, cut at stop strings."""

# What a decoder gives for the bytes of a character whose last bytes are still to come: GPT-2's BPE splits many
# characters (emoji, most of CJK) over two or more tokens, and tiktoken decodes an incomplete one as U+FFFD.
INCOMPLETE = '\ufffd'


def parse_stops(stop):
    """The stop strings of a setting or a request: None or '' for none, a string for one, a list for several."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    return [s for s in stop if s]


class TextStream:
    """
    The text of tokens pushed one at a time after a prompt. push(token) returns the text that has become final: a
    character split over tokens waits for its last byte, and text that may be the start of a stop string waits
    until it is clear whether the stop string follows. Once one does, the text ends just before it and stopped
    turns True; further tokens change nothing. finish() returns what was still held back, once no more tokens come.
    decode(ids) must give text that more ids only add to (char-level and BPE do), apart from INCOMPLETE characters
    at the end; whole_lines=True is for a decoder that rewrites the line in progress (the arithmetic datasets,
    which reverse an answer's digits): text then becomes final a line at a time.
    The prompt's last line (its tokens from the last one holding a newline) is decoded with the new tokens, for
    a decoder that reads a line as a whole.
    """

    def __init__(self, decode, stops=(), prompt=(), whole_lines=False):
        self.decode = decode
        self.stops = parse_stops(stops)
        self.whole_lines = whole_lines
        prompt = list(prompt)
        start = max((i for i, token in enumerate(prompt) if '\n' in decode([token])), default=0)
        self.ids = prompt[start:]
        self.skip = len(decode(self.ids)) # characters of the prompt, before the new text
        self.text = '' # the final text handed out so far
        self.stopped = False

    def push(self, token):
        if self.stopped:
            return ''
        self.ids.append(token)
        text = self.decode(self.ids)[self.skip:]
        settled = text[:text.rfind('\n') + 1] if self.whole_lines else text.rstrip(INCOMPLETE)
        return self._release(settled, final=False)

    def finish(self):
        """The rest of the text, once no token will follow (an incomplete last character comes out as INCOMPLETE)."""
        if self.stopped:
            return ''
        return self._release(self.decode(self.ids)[self.skip:], final=True)

    def _release(self, text, final):
        start = len(self.text)
        # no stop string starts before start: text that could have begun one was held back
        found = [i for i in (text.find(stop, start) for stop in self.stops) if i >= 0]
        if found:
            end = min(found)
            self.stopped = True
        elif final:
            end = len(text)
        else:
            end = self._undecided(text, start)
        new = text[start:end]
        self.text += new
        return new

    def _undecided(self, text, start):
        """Where the tail of text that could still grow into a stop string begins (len(text) if none could)."""
        longest = max((len(stop) for stop in self.stops), default=0)
        for i in range(max(start, len(text) - longest + 1), len(text)):
            tail = text[i:]
            if any(stop.startswith(tail) for stop in self.stops):
                return i
        return len(text)
