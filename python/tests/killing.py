"""Killing a vlm worker child at an event, not after a delay (test_worker.py, and test_ray.py
inside a Ray actor: conftest puts this folder on the workers' PYTHONPATH)."""
import os
import signal
import threading


def kill_mid_run(child, answered, record):
    """Makes `child` (a vlm._Child) die by SIGKILL in the middle of its next run, at an event
    rather than a moment: its first `answered` requests are sent (and flushed), the rest held
    back; once all of those are answered — so the child is waiting for more, nothing half
    written — it is killed, then the rest are sent to the dead child. `record(pid, answered,
    run length)` is called once it is dead."""
    exchange = child.exchange

    def killing_exchange(lines, on_response):
        dead = threading.Event()

        def held_back():
            yield from lines[:answered]
            child.proc.stdin.flush()
            dead.wait(60)        # bounded: a run that never gets there finishes unkilled, and the test fails
            yield from lines[answered:]

        class Lines(list):
            def __iter__(self):
                return held_back()

        def on(k, line):
            on_response(k, line)
            if k + 1 == answered:
                os.kill(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
                record(child.proc.pid, answered, len(lines))
                dead.set()
        return exchange(Lines(lines), on)
    child.exchange = killing_exchange
