#!/usr/bin/env python3
"""Drive the annql REPL through a real pseudo-terminal (used by tests/it/repl.rs).

Usage: repl_pty.py ANNQL_BINARY DATASET
Checks tab completion, a meta-command, a multi-line statement and Ctrl-C cancelling a long query.
Prints 'ok: <step>' per step; exits non-zero with the screen so far on the first failure.
"""
import os
import pty
import select
import sys
import time

binary, dataset = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.environ["ANNQL_HISTORY"] = "/dev/null"
    os.execv(binary, [binary, dataset])

screen = b""


def expect(pattern: bytes, timeout: float, step: str) -> None:
    global screen
    deadline = time.time() + timeout
    while pattern not in screen:
        left = deadline - time.time()
        if left <= 0:
            sys.stdout.write(f"FAIL: {step}: did not see {pattern!r}\n--- screen ---\n{screen.decode(errors='replace')}\n")
            os.kill(pid, 9)
            sys.exit(1)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                screen += os.read(fd, 65536)
            except OSError:
                break
    print(f"ok: {step}", flush=True)


def send(data: bytes) -> None:
    """Type `data` once the line editor is reading again (type-ahead before that is discarded)."""
    global screen
    time.sleep(0.5)
    screen = b""
    os.write(fd, data)


expect(b"annql> ", 30, "prompt")
send(b"SELECT count(*) FROM tiny.ob\t")
expect(b"tiny.obs", 10, "tab completes the table name")
send(b";\r")
expect(b"120", 30, "completed statement runs")
send(b"\\d tiny.obs\r")
expect(b"categories", 10, "meta-command describes a table")
send(b"SELECT\r")
expect(b"> ", 5, "continuation of a multi-line statement")
send(b"  42 AS answer;\r")
expect(b"answer", 10, "multi-line statement header")
expect(b"42", 10, "multi-line statement result")
send(b"SELECT sum(a.value * b.value * c.value * d.value) FROM tiny.x a, tiny.x b, tiny.x c, tiny.x d;\r")
time.sleep(1.5)
os.write(fd, b"\x03")
expect(b"Cancelled", 10, "Ctrl-C cancels a running query")
expect(b"annql> ", 10, "back at the prompt")
send(b"SELECT 7 AS seven;\r")
expect(b"seven", 10, "still answers after a cancel")
expect(b"(1 row)", 10, "result complete")
send(b"\\q\r")
deadline = time.time() + 20
while time.time() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            screen += os.read(fd, 65536)
        except OSError:
            pass
else:
    print(f"FAIL: quit: still running 20 s after \\q\n--- screen ---\n{screen.decode(errors='replace')}")
    os.kill(pid, 9)
    sys.exit(1)
if os.WEXITSTATUS(status) != 0:
    print(f"FAIL: exit status {status}")
    sys.exit(1)
print("ok: quit")
