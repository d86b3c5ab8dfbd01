"""The process a host round runs in: `python -m profiler.targets.host_worker`.

`HostTarget` starts one of these for each round and hands it that round's measurements, so a
round's timings come from a process of their own: where its heap, its packed weights and its
planned buffers land in memory (and so which cache sets they share) is drawn afresh each round,
the same way it is drawn for a user's process. Timings within one process share that draw;
timings of different processes do not (see docs/protocol.md, "A fresh process per round").

Wire format, over stdin and the original stdout (the worker's own stdout goes to stderr, so a
runtime that prints cannot corrupt it): each message is an 8-byte big-endian length and a pickle.
Request: `(runtime_name, dtype, layout, model_path, RunSpec, profile)`. Reply: `("ok",
Measurement)` or `("error", "TypeName: message")`. End of stdin ends the worker.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import struct
import sys
import warnings
from typing import Any, BinaryIO

_LEN = struct.Struct(">Q")


def read_message(stream: BinaryIO) -> Any:
    """One length-prefixed pickle from `stream`; None at end of stream."""
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    body = stream.read(n)
    if len(body) < n:
        return None
    return pickle.loads(body)


def encode_message(obj: Any) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(body)) + body


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    from profiler.runtimes import get_runtime
    from profiler.targets.host import measure_here

    runtimes: dict[tuple[str, str, str], Any] = {}
    while (request := read_message(requests)) is not None:
        name, dtype, layout, path, spec, profile = request
        try:
            rt = runtimes.get((name, dtype, layout))
            if rt is None:
                rt = runtimes[(name, dtype, layout)] = get_runtime(name, dtype, layout)
                rt.load_libraries()  # not part of the first model's load time
            reply: tuple[str, Any] = ("ok", measure_here(rt, path, spec, profile))
        except Exception as e:  # the parent turns it into a RunnerError for this op
            reply = ("error", f"{type(e).__name__}: {e}")
        replies.write(encode_message(reply))
        replies.flush()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops between op-rounds
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints of a runtime go to stderr
    sys.stdout = sys.stderr
    # the libraries' import-time chatter was shown once by the parent; the worker's own warnings stay
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("profiler").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    import torch  # noqa: F401  (torch sets its loggers' levels when imported; quiet them after)

    logging.getLogger("torch").setLevel(logging.ERROR)
    serve(sys.stdin.buffer, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
