#!/usr/bin/env python3
"""Drive the annql REPL through a real pseudo-terminal (used by tests/it/repl.rs).

Usage: repl_pty.py ANNQL_BINARY DATASET
Checks tab completion, a meta-command, a multi-line statement, Ctrl-C cancelling a long query and
Ctrl-C stopping the printing of a large result.
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


def drain_until(pattern: bytes, timeout: float, step: str, stop_after: int = 0) -> tuple[float, bytes, int]:
    """Read output until `pattern` appears (or, with `stop_after`, until that many bytes came).

    A large result streams through here, so only the last 64 KiB are kept. Returns the seconds
    it took, the tail and the bytes read.
    """
    started = time.time()
    tail, total = b"", 0
    while True:
        if (pattern and pattern in tail) or (stop_after and total >= stop_after):
            return time.time() - started, tail, total
        left = started + timeout - time.time()
        if left <= 0:
            print(f"FAIL: {step}: did not see {pattern!r} in {timeout} s\n--- last output ---\n{tail[-2000:].decode(errors='replace')}")
            os.kill(pid, 9)
            sys.exit(1)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            total += len(chunk)
            tail = (tail + chunk)[-65536:]


# Ctrl-C while a large result is being formatted and printed: first the whole result, to know
# how long printing takes here, then the same result again, interrupted once it is printing.
ROWS = 2_000_000
big = f"SELECT value, value * 2 AS twice FROM range({ROWS}) ORDER BY value;\r".encode()
send(b".mode csv\r")
expect(b"annql> ", 10, "csv output mode")
send(big)
# Wait for the last row itself: the line editor redraws "annql> " while echoing what was typed,
# so the prompt alone can be seen before the result has even started.
last_row = f"{ROWS - 1},{2 * (ROWS - 1)}".encode()
full, tail, printed = drain_until(last_row, 300, "a large result prints whole")
if b"annql> " not in tail[tail.rindex(last_row):]:
    drain_until(b"annql> ", 30, "the prompt after the large result")
print(f"ok: a large result prints whole ({printed} bytes in {full:.1f} s)", flush=True)
send(big)
drain_until(b"", 60, "the large result starts printing", stop_after=printed // 20)
print("ok: the large result starts printing", flush=True)
os.write(fd, b"\x03")
took, tail, _ = drain_until(b"annql> ", 300, "Ctrl-C stops the printing")
if b"Cancelled" not in tail or f"{ROWS - 1},".encode() in tail:
    print(f"FAIL: Ctrl-C while printing: no 'Cancelled', or the output went on to the end\n{tail[-500:].decode(errors='replace')}")
    sys.exit(1)
# Relative: stopping must take a small part of what printing the whole result took.
if took > full / 4:
    print(f"FAIL: Ctrl-C while printing: the prompt came back after {took:.1f} s; printing everything took {full:.1f} s")
    sys.exit(1)
print(f"ok: Ctrl-C stops printing a large result ({took:.2f} s after Ctrl-C, {full:.1f} s for all of it)", flush=True)
send(b".mode table\r")
expect(b"annql> ", 10, "table output mode")
send(b"SELECT 8 AS eight;\r")
expect(b"(1 row)", 10, "answers after output was stopped")
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
