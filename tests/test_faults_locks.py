"""A command that waits for another mde's lock says what it waits for, then gives up in one line."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from mde import instruments
from mde.clock import IST
from mde.errors import CacheError
from mde.sources.kite.instruments import InstrumentCatalog

HOLD = "import sys, time\nfrom filelock import FileLock\nl = FileLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(60)"


def test_the_instruments_memory_lock_wait_is_said_then_one_cache_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "_meta"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder / instruments.LOCK_FILE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(instruments, "LOCK_TIMEOUT_S", 0.2)
        catalog = InstrumentCatalog(folder, lambda: [], lambda: datetime(2024, 6, 14, 10, 0, tzinfo=IST))
        with (
            caplog.at_level(logging.WARNING, logger="mde"),
            pytest.raises(CacheError, match="another mde process has held"),
        ):
            catalog._remember("NSE:INFY", {"token": 408065})
        assert any("waiting for" in r.getMessage() and instruments.LOCK_FILE in r.getMessage() for r in caplog.records)
    finally:
        holder.kill()
        holder.wait()
