"""vgglab.signals.held(): a stopping signal whose handler runs in the main thread inside the block
(another thread of the process took it, so the block's mask did not keep it out) is raised as the
block ends, never in the middle of what the block builds (a DataLoader iterator, half-built)."""

import signal
import threading

import pytest

from vgglab import signals
from vgglab.errors import Terminated


@pytest.mark.parametrize("signum, stop", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_handled_inside_held_is_raised_when_it_ends(signum, stop):
    handler = signals._raise_terminated if signum != signal.SIGINT else signals._raise_interrupt
    built = []
    with pytest.raises(stop) as caught:
        with signals.held():
            handler(signum, None)  # as CPython runs it in the main thread, whichever thread took the signal
            built.append("the rest of the block")
    assert built == ["the rest of the block"]
    assert not isinstance(caught.value, Terminated) or caught.value.signum == signum
    assert signals._holding == 0 and signals._pending == []
    with pytest.raises(stop):  # outside a block the handler raises at once, as before
        handler(signum, None)


def test_a_signal_taken_by_another_thread_during_held_stops_the_main_thread_after_the_block(monkeypatch):
    monkeypatch.setattr(signals, "received", [])
    previous = signal.signal(signal.SIGTERM, signals._raise_terminated)
    try:
        done = []
        with pytest.raises(Terminated):
            with signals.held():
                # sent to the main thread, which blocks it here: it stops that thread when the block ends
                t = threading.Thread(target=lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM))
                t.start()
                t.join()
                done.append(True)
        assert done == [True] and signals.received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
