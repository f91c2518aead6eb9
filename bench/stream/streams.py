"""bench/stream's fake upstream: bench/overhead's nginx, plus fixed streams of N content chunks.

`POST /s{N}/v1/chat/completions` answers a fixed `text/event-stream` body as OpenAI streams
it with `stream_options.include_usage`: a role chunk, N content chunks of a few characters (a
token each, about 230 bytes an event, as OpenAI's are), a finish chunk, the usage chunk
(`choices: []`), `data: [DONE]`. nginx sends it from a file as fast as the socket takes it
(a static file answers only GET, so a 405 is turned into the file with a 200). The rest of
the server (`/v1/chat/completions`, not streamed) is bench/overhead's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from subprocess import Popen
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "overhead"))
import upstream as overhead_upstream
from procs import Procs

MODEL = "mock-model"
WORDS = ["Caching", "avoids", "repeated", "work", "so", "answers", "come", "back", "faster"]
PROMPT_TOKENS = 42


def content_parts(n: int) -> list[str]:
    """N tokens of text, one a chunk."""
    return [f" {WORDS[i % len(WORDS)]}" for i in range(n)]


def content(n: int) -> str:
    return "".join(content_parts(n))


def usage(n: int) -> dict[str, int]:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n, "total_tokens": n + 42}


def stream_body(n: int) -> str:
    def event(choices: list[Any], usage: dict[str, int] | None = None) -> str:
        chunk = {
            "id": "chatcmpl-mockstream0000000000000001",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": choices,
            "usage": usage,
        }
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [event(choice({"role": "assistant", "content": "", "refusal": None}))]
    events += [event(choice({"content": part})) for part in content_parts(n)]
    events.append(event(choice({}, "stop")))
    events.append(event([], usage(n)))
    return "".join(events) + "data: [DONE]\n\n"


def nginx_conf(prefix: Path, port: int, lengths: list[int]) -> str:
    """bench/overhead's config with one location per stream length."""
    files = prefix / "streams"
    files.mkdir(parents=True, exist_ok=True)
    locations = [
        f"""location = /files/s{n}.sse {{
            internal;
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            alias {files}/s{n}.sse;
        }}
        location = /s{n}/v1/chat/completions {{
            error_page 405 =200 /files/s{n}.sse;
            return 405;
        }}
        """
        for n in lengths
    ]
    for n in lengths:
        (files / f"s{n}.sse").write_text(stream_body(n))
    conf = overhead_upstream.nginx_conf(prefix, port)
    return conf.replace("location / {", "".join(locations) + "location / {", 1)


def start_nginx(workdir: Path, port: int, lengths: list[int], procs: Procs) -> Popen[Any]:
    """nginx in the foreground, in its own process group (bench/overhead's way)."""
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, lengths))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    test = subprocess.run([*cmd, "-t", "-q"], capture_output=True, text=True)
    if test.returncode != 0:
        raise SystemExit(f"nginx config test failed:\n{test.stderr}")
    return procs.start(cmd, workdir / "nginx.out")
